//! Writing a file so that its readers (the plugins-folder watcher, another kp process sharing the
//! artifact cache, an operator's tool reading the status file) see the old contents or the new,
//! never half of them: write under a temporary name, then rename over the target.

use std::path::Path;

/// Replaces `path` with `contents` in one rename. The temporary name ends in `.tmp<pid>`: two
/// processes writing one path never mix their halves, and it is neither `.wasm` nor `.toml`, so
/// a kp watching the folder ignores it.
pub fn write_whole(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}
