//! Files written whole or not at all.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// A file written beside its final place (`<name>.partial`) and moved there by
/// [`commit_all`]: a failure before that (a full disk, a failed parity check) leaves the
/// earlier file as it was, and an uncommitted one is removed when dropped.
#[derive(Debug)]
pub struct Staged {
    partial: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Staged {
    pub fn new(target: PathBuf) -> Self {
        let mut partial = target.clone().into_os_string();
        partial.push(".partial");
        Self { partial: partial.into(), target, committed: false }
    }

    /// Where to write the file now.
    pub fn path(&self) -> &Path {
        &self.partial
    }

    pub fn target(&self) -> &Path {
        &self.target
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.partial);
        }
    }
}

/// Moves every staged file into place, in order. Renames need no space, so once every
/// file is written whole this does not fail for a full disk.
pub fn commit_all(files: impl IntoIterator<Item = Staged>) -> io::Result<()> {
    for mut file in files {
        fs::rename(&file.partial, &file.target)
            .map_err(|e| io::Error::new(e.kind(), format!("{} → {}: {e}", file.partial.display(), file.target.display())))?;
        file.committed = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_committed_files_replace_their_targets() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (kept, replaced) = (dir.path().join("kept.txt"), dir.path().join("replaced.txt"));
        fs::write(&kept, "old").expect("write");
        fs::write(&replaced, "old").expect("write");
        let abandoned = Staged::new(kept.clone());
        fs::write(abandoned.path(), "half").expect("write");
        drop(abandoned);
        let staged = Staged::new(replaced.clone());
        fs::write(staged.path(), "new").expect("write");
        commit_all([staged]).expect("renames");
        assert_eq!(fs::read_to_string(&kept).expect("read"), "old");
        assert_eq!(fs::read_to_string(&replaced).expect("read"), "new");
        let left: Vec<_> = fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(left.len(), 2, "no .partial left: {left:?}");
    }
}
