//! `install DEST`: the init container copies this executable into the pod's emptyDir.
//!
//! The init container runs gracegate's own image, and the application images the waiter
//! ends up in may have no `cp` (distroless, scratch), so the waiter copies itself:
//! `/proc/self/exe` is this executable whatever its path. The copy is atomic (a temporary
//! file in the same directory, synced, then renamed over DEST) so a preStop never execs a
//! half-written file, even when the init container is killed mid-copy and restarted.

use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const SELF: &str = "/proc/self/exe";

#[derive(Debug)]
pub struct InstallError {
    step: String,
    error: io::Error,
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.error)
    }
}

fn at(step: impl Into<String>) -> impl FnOnce(io::Error) -> InstallError {
    let step = step.into();
    move |error| InstallError { step, error }
}

/// Copies this executable to `dest`; the number of bytes copied.
pub fn install(dest: &Path) -> Result<u64, InstallError> {
    copy_atomically(Path::new(SELF), dest)
}

pub fn copy_atomically(source: &Path, dest: &Path) -> Result<u64, InstallError> {
    let name = dest.file_name().ok_or_else(|| InstallError {
        step: format!("{} names no file", dest.display()),
        error: io::ErrorKind::InvalidInput.into(),
    })?;
    let dir = match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = dir.join(temp_name);

    let mut input = File::open(source).map_err(at(format!("cannot read {}", source.display())))?;
    // An init container is PID 1 on every run: a copy killed mid-way left this very name.
    let _ = fs::remove_file(&temp);
    let result = (|| {
        let mut output = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&temp)
            .map_err(at(format!("cannot create {}", temp.display())))?;
        let bytes = io::copy(&mut input, &mut output)
            .map_err(at(format!("cannot write {}", temp.display())))?;
        // The umask may have taken bits off `mode`.
        output
            .set_permissions(Permissions::from_mode(0o755))
            .map_err(at(format!("cannot chmod {}", temp.display())))?;
        output
            .sync_all()
            .map_err(at(format!("cannot sync {}", temp.display())))?;
        fs::rename(&temp, dest).map_err(at(format!(
            "cannot rename {} to {}",
            temp.display(),
            dest.display()
        )))?;
        Ok(bytes)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    let bytes = result?;
    // The rename itself is only durable once the directory is.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(at(format!("cannot sync {}", dir.display())))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gracegate-wait-install-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn copies_replaces_and_leaves_no_temporary_file() {
        let dir = scratch("copy");
        let source = dir.join("source");
        fs::write(&source, b"#!binary").unwrap();
        let dest = dir.join("gracegate-wait");
        fs::write(&dest, b"an older copy").unwrap();
        fs::write(
            dir.join(format!(".gracegate-wait.tmp-{}", std::process::id())),
            b"stale",
        )
        .unwrap();

        assert_eq!(copy_atomically(&source, &dest).unwrap(), 8);
        assert_eq!(fs::read(&dest).unwrap(), b"#!binary");
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, 0o755);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["gracegate-wait", "source"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failures_say_which_step() {
        let dir = scratch("fail");
        let missing = copy_atomically(&dir.join("nope"), &dir.join("x")).unwrap_err();
        assert!(missing.to_string().starts_with("cannot read "), "{missing}");
        fs::write(dir.join("source"), b"x").unwrap();
        let no_dir = copy_atomically(&dir.join("source"), &dir.join("absent/x")).unwrap_err();
        assert!(no_dir.to_string().starts_with("cannot create "), "{no_dir}");
        let no_name = copy_atomically(&dir.join("source"), Path::new("/")).unwrap_err();
        assert!(no_name.to_string().contains("names no file"), "{no_name}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
