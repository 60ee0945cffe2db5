//! `kp new NAME --lang LANG`: writes a handler project that builds as it is (`./build.sh`) into
//! `NAME.wasm` beside its manifest `NAME.toml`, ready for `kp check` and a plugins folder.
//!
//! Every project carries its SDK in `sdk/`, embedded in this binary, so it always matches the
//! host's WIT and the project builds wherever it is copied (a Rust project's `kp-guest` crate is
//! `sdk/kp-guest`, a path dependency inside the project). Every project has a first test case,
//! `test/input.jsonl` and `test/expected.jsonl`, which `kp test NAME.wasm` runs.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::KP_WIT;

/// The languages `kp new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Js,
    Python,
    C,
    Go,
}

/// One file of a project; `{{name}}` and `{{crate}}` are filled in.
struct Template {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

const fn file(path: &'static str, text: &'static str) -> Template {
    Template {
        path,
        text,
        executable: false,
    }
}

const fn script(path: &'static str, text: &'static str) -> Template {
    Template {
        path,
        text,
        executable: true,
    }
}

macro_rules! sdk {
    ($path:literal) => {
        include_str!(concat!("../../../guest-sdk/", $path))
    };
}

const RUST: &[Template] = &[
    file("Cargo.toml", sdk!("rust/template/Cargo.toml")),
    file("src/lib.rs", sdk!("rust/template/lib.rs")),
    script("build.sh", sdk!("rust/template/build.sh")),
    file("sdk/kp-guest/Cargo.toml", sdk!("rust/Cargo.toml")),
    file("sdk/kp-guest/src/lib.rs", sdk!("rust/src/lib.rs")),
    file("sdk/kp-guest/wit/kp.wit", KP_WIT),
    file(".gitignore", "/target\n*.wasm\n"),
];

const JS: &[Template] = &[
    file("handler.js", sdk!("js/template/handler.js")),
    script("build.sh", sdk!("js/template/build.sh")),
    file("sdk/kp.js", sdk!("js/kp.js")),
    script("sdk/build.mjs", sdk!("js/build.mjs")),
    script("sdk/build.sh", sdk!("js/build.sh")),
    file("sdk/package.json", sdk!("js/package.json")),
    file("sdk/package-lock.json", sdk!("js/package-lock.json")),
    file("sdk/wit/kp.wit", KP_WIT),
    file(".gitignore", "node_modules/\n*.wasm\n"),
];

const PYTHON: &[Template] = &[
    file("app.py", sdk!("python/template/app.py")),
    script("build.sh", sdk!("python/template/build.sh")),
    file("sdk/kp_guest.py", sdk!("python/kp_guest.py")),
    script("sdk/build.sh", sdk!("python/build.sh")),
    file("sdk/requirements.txt", sdk!("python/requirements.txt")),
    file("sdk/wit/kp.wit", KP_WIT),
    file(".gitignore", ".venv/\n__pycache__/\n*.wasm\n"),
];

const C: &[Template] = &[
    file("handler.c", sdk!("c/template/handler.c")),
    script("build.sh", sdk!("c/template/build.sh")),
    file("sdk/kp.h", sdk!("c/kp.h")),
    file("sdk/kp.c", sdk!("c/kp.c")),
    script("sdk/build.sh", sdk!("c/build.sh")),
    file(
        "sdk/bindings/handler_world.h",
        sdk!("c/bindings/handler_world.h"),
    ),
    file(
        "sdk/bindings/handler_world.c",
        sdk!("c/bindings/handler_world.c"),
    ),
    file(".gitignore", "*.wasm\n"),
];

const GO: &[Template] = &[
    file("main.go", sdk!("go/template/main.go")),
    file("go.mod", sdk!("go/template/go.mod")),
    script("build.sh", sdk!("go/template/build.sh")),
    file("sdk/go.mod", sdk!("go/go.mod")),
    file("sdk/kp.go", sdk!("go/kp.go")),
    file("sdk/abi.go", sdk!("go/abi.go")),
    file("sdk/alloc.go", sdk!("go/alloc.go")),
    file("sdk/alloc_call.go", sdk!("go/alloc_call.go")),
    script("sdk/build.sh", sdk!("go/build.sh")),
    file(".gitignore", "*.wasm\n"),
];

const MANIFEST: &str = "\
# Manifest of the {{name}} plugin: put {{name}}.wasm and this file side by side in kp's plugins
# folder. Every key is described in the kp README (\"The manifest\").
input-topics = [\"{{name}}-in\"]
output-topic = \"{{name}}-out\"

[limits]
timeout-ms = 5000
# JavaScript and Python engines need at least 16 MiB to start.
memory-mib = 64

[on-failure]
policy = \"halt\"

[config]
";

/// What `kp new` needs to know.
pub struct NewProject<'a> {
    /// The plugin's name: the folder, `NAME.wasm`, `NAME.toml`, and the default topics.
    pub name: &'a str,
    pub language: Language,
    /// Where the project folder goes (created; must not exist yet).
    pub dir: &'a Path,
}

/// How the kp-guest crate names the WIT folder in kp's source tree (`guest-sdk/rust`).
const RUST_SDK_WIT_IN_TREE: &str = "path: \"../../wit\"";

/// The first test case of every project (all templates do the same): a message is copied to the
/// output topic with a `handled-by` header, a tombstone is a bad message.
const TEST_INPUT: &str = r#"{"key": "k1", "value": "hello", "headers": [{"name": "source", "value": "kp new"}]}
{"key": "k2", "value": null}
"#;
const TEST_EXPECTED: &str = r#"{"offset": 0, "outputs": [{"topic": "{{name}}-out", "key": "k1", "value": "hello", "headers": [{"name": "source", "value": "kp new"}, {"name": "handled-by", "value": "{{name}}"}]}]}
{"offset": 1, "error": {"kind": "bad-message"}}
"#;

/// Writes the project; returns the command that builds it.
pub fn create(project: &NewProject<'_>) -> Result<String> {
    check_name(project.name)?;
    if project.dir.exists() {
        bail!(
            "{} already exists; kp new writes a new folder",
            project.dir.display()
        );
    }
    let templates = match project.language {
        Language::Rust => RUST,
        Language::Js => JS,
        Language::Python => PYTHON,
        Language::C => C,
        Language::Go => GO,
    };
    let fill = |text: &str| {
        text.replace("{{name}}", project.name)
            .replace("{{crate}}", &project.name.replace('-', "_"))
            // kp-guest reads the WIT from the repository's wit/; in a project, from its own.
            .replace(RUST_SDK_WIT_IN_TREE, "path: \"wit\"")
    };
    let manifest = format!("{}.toml", project.name);
    let readme = fill(&readme(project.language));
    let all = templates
        .iter()
        .map(|t| (t.path, t.text, t.executable))
        .chain([
            (manifest.as_str(), MANIFEST, false),
            ("README.md", readme.as_str(), false),
            ("test/input.jsonl", TEST_INPUT, false),
            ("test/expected.jsonl", TEST_EXPECTED, false),
        ]);
    for (path, text, executable) in all {
        let target = project.dir.join(path);
        std::fs::create_dir_all(target.parent().expect("a file in the project"))
            .with_context(|| format!("creating {}", project.dir.display()))?;
        std::fs::write(&target, fill(text))
            .with_context(|| format!("writing {}", target.display()))?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making {} executable", target.display()))?;
        }
    }
    Ok(format!("{}/build.sh", project.dir.display()))
}

/// A plugin name is a file name, a crate/package name and part of topic names.
fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!(
            "plugin name {name:?}: use lowercase letters, digits and '-', starting with a letter"
        );
    }
    Ok(())
}

fn readme(language: Language) -> String {
    let (source, needs) = match language {
        Language::Rust => (
            "src/lib.rs",
            "Rust with the wasm32-wasip2 target (build.sh adds it)",
        ),
        Language::Js => (
            "handler.js",
            "Node.js and npm (build.sh installs componentize-js into sdk/ once)",
        ),
        Language::Python => (
            "app.py",
            "Python 3 (build.sh installs componentize-py into sdk/.venv once)",
        ),
        Language::Go => ("main.go", "Go 1.24 or newer and kp on PATH"),
        Language::C => (
            "handler.c",
            "clang, lld and wasi-libc (Debian: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32) and kp on PATH",
        ),
    };
    let listen = crate::dev::DEFAULT_LISTEN;
    format!(
        "# {{{{name}}}}: a kp message handler\n\n\
         Your handler is in `{source}`; its manifest (topics, limits, failure policy, config) in \
         `{{{{name}}}}.toml`; its test cases in `test/` (input messages, expected results).\n\n\
         ```sh\n\
         ./build.sh                      # -> {{{{name}}}}.wasm; needs {needs}\n\
         kp test {{{{name}}}}.wasm           # runs test/input.jsonl, compares with test/expected.jsonl\n\
         mkdir -p plugins && cp {{{{name}}}}.wasm {{{{name}}}}.toml plugins/\n\
         kp dev --plugins plugins --tail  # an embedded broker; prints every output it produces\n\
         ```\n\n\
         `kp dev` prints the broker's address ({listen} unless `--listen` says otherwise): \
         produce to `{{{{name}}}}-in` with any Kafka client, e.g. \
         `echo hello | kcat -b {listen} -P -t {{{{name}}}}-in`. A line of \
         `test/expected.jsonl` names only what it checks: a field left out matches anything. \
         `kp replay --plugin {{{{name}}}}.wasm --input test/input.jsonl` prints the whole results. \
         `kp check {{{{name}}}}.wasm` describes the module. To deploy, put `{{{{name}}}}.wasm` and \
         `{{{{name}}}}.toml` in the plugins folder of a running kp: it picks them up.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_file_and_topic_safe_are_refused() {
        for bad in ["", "Upper", "1st", "a b", "a/b", "a.b", "a_b"] {
            assert!(check_name(bad).is_err(), "{bad:?} was accepted");
        }
        check_name("order-router2").unwrap();
    }

    #[test]
    fn every_placeholder_is_filled() {
        let dir = tempfile::tempdir().unwrap();
        for (i, language) in [
            Language::Rust,
            Language::Js,
            Language::Python,
            Language::C,
            Language::Go,
        ]
        .into_iter()
        .enumerate()
        {
            let project = dir.path().join(format!("p{i}"));
            create(&NewProject {
                name: "my-plugin",
                language,
                dir: &project,
            })
            .unwrap();
            for entry in walk(&project) {
                let text = std::fs::read_to_string(&entry).unwrap();
                assert!(
                    !text.contains("{{"),
                    "{} keeps a placeholder",
                    entry.display()
                );
            }
            assert!(project.join("my-plugin.toml").is_file());
            assert!(project.join("test/expected.jsonl").is_file());
            if language == Language::Rust {
                let sdk = std::fs::read_to_string(project.join("sdk/kp-guest/src/lib.rs")).unwrap();
                assert!(
                    sdk.contains("path: \"wit\""),
                    "kp-guest must read its own WIT"
                );
                assert!(project.join("sdk/kp-guest/wit/kp.wit").is_file());
            }
            crate::manifest::Manifest::parse(
                "my-plugin",
                &std::fs::read_to_string(project.join("my-plugin.toml")).unwrap(),
            )
            .expect("the scaffolded manifest parses");
        }
        let again = create(&NewProject {
            name: "my-plugin",
            language: Language::C,
            dir: &dir.path().join("p0"),
        });
        assert!(again.unwrap_err().to_string().contains("already exists"));
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(walk(&path))
            } else {
                files.push(path)
            }
        }
        files
    }
}
