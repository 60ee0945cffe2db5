//! `kp new NAME --lang LANG`: writes a handler project that builds as it is (`./build.sh`) into
//! `NAME.wasm` beside its manifest `NAME.toml`, ready for `kp check` and a plugins folder.
//!
//! JavaScript, Python and C projects carry their SDK in `sdk/` (embedded in this binary, so it
//! always matches the host's WIT). A Rust project depends on the `kp-guest` crate by path.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::KP_WIT;

/// The languages `kp new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Js,
    Python,
    C,
}

/// One file of a project; `{{name}}`, `{{crate}}` and `{{sdk}}` are filled in.
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
    /// The repository's `guest-sdk` folder (only Rust projects refer to it).
    pub sdk: Option<&'a Path>,
}

/// The `guest-sdk` folder of the source tree this binary was built from, if it still exists.
pub fn built_in_sdk_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    dir.join("rust/Cargo.toml").is_file().then_some(dir)
}

/// Writes the project; returns the command that builds it.
pub fn create(project: &NewProject<'_>) -> Result<String> {
    check_name(project.name)?;
    if project.dir.exists() {
        bail!(
            "{} already exists; kp new writes a new folder",
            project.dir.display()
        );
    }
    let sdk = match project.language {
        Language::Rust => {
            let sdk = project
                .sdk
                .map(Path::to_path_buf)
                .or_else(built_in_sdk_dir)
                .context(
                    "a Rust project depends on the kp-guest crate: pass --sdk PATH/TO/kp/guest-sdk",
                )?;
            let sdk = sdk
                .canonicalize()
                .with_context(|| format!("--sdk {}", sdk.display()))?;
            if !sdk.join("rust/Cargo.toml").is_file() {
                bail!(
                    "{} has no rust/Cargo.toml: --sdk must name kp's guest-sdk folder",
                    sdk.display()
                );
            }
            sdk.display().to_string()
        }
        _ => String::new(),
    };
    let templates = match project.language {
        Language::Rust => RUST,
        Language::Js => JS,
        Language::Python => PYTHON,
        Language::C => C,
    };
    let fill = |text: &str| {
        text.replace("{{name}}", project.name)
            .replace("{{crate}}", &project.name.replace('-', "_"))
            .replace("{{sdk}}", &sdk)
    };
    let manifest = format!("{}.toml", project.name);
    let readme = fill(&readme(project.language));
    let all = templates
        .iter()
        .map(|t| (t.path, t.text, t.executable))
        .chain([
            (manifest.as_str(), MANIFEST, false),
            ("README.md", readme.as_str(), false),
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
        Language::C => (
            "handler.c",
            "clang, lld and wasi-libc (Debian: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32) and kp on PATH",
        ),
    };
    format!(
        "# {{{{name}}}}: a kp message handler\n\n\
         Your handler is in `{source}`; its manifest (topics, limits, failure policy, config) in `{{{{name}}}}.toml`.\n\n\
         ```sh\n\
         ./build.sh                                   # -> {{{{name}}}}.wasm; needs {needs}\n\
         kp check {{{{name}}}}.wasm                       # loads it with its manifest and describes it\n\
         echo '{{\"key\":\"k\",\"value\":\"hello\"}}' | kp replay --plugin {{{{name}}}}.wasm   # runs it, no Kafka\n\
         cp {{{{name}}}}.wasm {{{{name}}}}.toml /path/to/plugins/   # a running kp picks it up\n\
         ```\n"
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
        for (i, language) in [Language::Rust, Language::Js, Language::Python, Language::C]
            .into_iter()
            .enumerate()
        {
            let project = dir.path().join(format!("p{i}"));
            let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
            create(&NewProject {
                name: "my-plugin",
                language,
                dir: &project,
                sdk: Some(&sdk),
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
            sdk: None,
        });
        assert!(again.unwrap_err().to_string().contains("already exists"));
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
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
