//! Files kp reads and writes with care.
//!
//! - [`write_whole`]: writing a file so that its readers (the plugins-folder watcher, another kp
//!   process sharing the artifact cache, an operator's tool reading the status file) see the old
//!   contents or the new, never half of them: write under a temporary name, then rename.
//! - [`read_plugin_file`]: reading a file of the plugins folder, which anyone who can write there
//!   controls: only a regular file, only inside the folder, only up to a size, checked before
//!   reading.

use std::io::Read;
use std::path::Path;

/// Largest module kp reads (JavaScript and Python components are 12-18 MB).
pub const MAX_MODULE_BYTES: u64 = 128 << 20;
/// Largest manifest kp reads.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Reads `path`, a file of a plugins folder, refusing what is not a regular file, a link that
/// leads outside the folder the file is in (a link inside it, as Kubernetes' ConfigMap volumes
/// make, is followed), and anything larger than `max` bytes. The error names the file and the
/// reason, never its contents.
///
/// The checks are made on the file as opened, not on the path before opening, so a file swapped
/// in between (a link to elsewhere, a FIFO that would block) changes nothing: the file is opened
/// without blocking, then its descriptor says what it is, how large, and where it really is.
pub fn read_plugin_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |why: String| Error::new(ErrorKind::InvalidInput, why);
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => std::fs::canonicalize(p)?,
        _ => std::env::current_dir()?,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    if !opened.starts_with(&folder) {
        return Err(refuse(format!(
            "{} leads to {}, outside the plugins folder: not followed",
            path.display(),
            opened.display()
        )));
    }
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refuse(format!("{} is not a regular file", path.display())));
    }
    if meta.len() > max {
        return Err(refuse(format!(
            "{} is {} bytes, above the limit of {max}",
            path.display(),
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(refuse(format!(
            "{} grew above the limit of {max} bytes while being read",
            path.display()
        )));
    }
    Ok(bytes)
}

/// A TOML scalar (string, number, boolean, date) as the text a string-typed setting takes
/// (librdkafka properties, a guest's `[config]`); `None` for an array or a table.
pub fn toml_scalar_text(value: &toml::Value) -> Option<String> {
    Some(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => return None,
    })
}

/// A TOML error as "line L, column C: what is wrong", without the quoted source line the
/// `toml` crate adds (the file may not be what it claims to be, and its text may be secret).
pub fn toml_error(error: &toml::de::Error, text: &str) -> String {
    match error.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            // The key of that line, when it is one (a name, not text that could be a secret).
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim())
                .filter(|k| {
                    !k.is_empty()
                        && k.len() <= 64
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.\"".contains(c))
                });
            match key {
                Some(key) => format!("line {line}, column {column} ({key}): {}", error.message()),
                None => format!("line {line}, column {column}: {}", error.message()),
            }
        }
        None => error.message().to_string(),
    }
}

/// Replaces `path` with `contents` in one rename. The temporary name ends in `.tmp<pid>`: two
/// processes writing one path never mix their halves, and it is neither `.wasm` nor `.toml`, so
/// a kp watching the folder ignores it.
pub fn write_whole(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_files_are_regular_files_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("a.toml");
        std::fs::write(&good, "x = 1").unwrap();
        assert_eq!(read_plugin_file(&good, 100).unwrap(), b"x = 1");
        std::os::unix::fs::symlink(&good, dir.path().join("inside.toml")).unwrap();
        assert!(read_plugin_file(&dir.path().join("inside.toml"), 100).is_ok());
        std::os::unix::fs::symlink("/proc/self/environ", dir.path().join("env.toml")).unwrap();
        let why = read_plugin_file(&dir.path().join("env.toml"), 100)
            .unwrap_err()
            .to_string();
        assert!(why.contains("outside the plugins folder"), "{why}");
        std::fs::create_dir(dir.path().join("d.toml")).unwrap();
        assert!(read_plugin_file(&dir.path().join("d.toml"), 100).is_err());
        // A FIFO would block a plain open for ever: refused at once.
        let fifo = dir.path().join("f.toml");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let why = read_plugin_file(&fifo, 100).unwrap_err().to_string();
        assert!(why.contains("not a regular file"), "{why}");
        let why = read_plugin_file(&good, 2).unwrap_err().to_string();
        assert!(why.contains("above the limit"), "{why}");
    }

    #[test]
    fn toml_errors_do_not_quote_the_text() {
        let text = "a = 1\nSECRET=hunter2 oops\n";
        let error = toml::from_str::<toml::Value>(text).unwrap_err();
        let why = toml_error(&error, text);
        assert!(why.starts_with("line 2, column"), "{why}");
        assert!(!why.contains("hunter2"), "{why}");
    }
}
