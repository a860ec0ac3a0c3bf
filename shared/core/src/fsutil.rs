//! File helpers shared by the commands: writes that either complete or leave nothing behind.

use std::io::Write;
use std::path::Path;

/// Writes `path` atomically: the bytes go to a temporary file in the same folder, which is
/// renamed over `path` only once `write` has succeeded and the data is flushed to disk; the
/// folder is then flushed too (on Unix), so the new file survives a crash once this returns. On
/// any error before the rename no file is left at `path` (an existing one is untouched) and the
/// temporary is removed; an error from flushing the folder means the file is in place but may
/// not survive a crash. The file gets ordinary permissions (mode `0644` on Unix).
pub fn write_atomic<E>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<std::io::Error>,
{
    write_atomic_with_mode(path, 0o644, write)
}

/// [`write_atomic`] for a file only its owner may read or write: mode `0600` on Unix, set when
/// the temporary file is created (the umask can only narrow it).
pub(crate) fn write_atomic_private<E>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<std::io::Error>,
{
    write_atomic_with_mode(path, 0o600, write)
}

/// [`write_atomic`] with the file's Unix mode (ignored elsewhere).
fn write_atomic_with_mode<E>(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<std::io::Error>,
{
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".twin-").suffix(".tmp");
    // Created owner-only; widened below if `mode` asks for more.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    let mut tmp = builder.tempfile_in(dir)?;
    {
        let mut buf = std::io::BufWriter::new(tmp.as_file_mut());
        write(&mut buf)?;
        buf.flush()?;
    }
    tmp.as_file().sync_all()?;
    #[cfg(unix)]
    if mode != 0o600 {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.persist(path).map_err(|e| E::from(e.error))?;
    sync_dir(dir)?;
    Ok(())
}

/// Flushes a folder's entries to disk (so a file renamed into it stays there after a crash).
/// A no-op where folders cannot be opened as files (not Unix).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        let r: Result<(), std::io::Error> = write_atomic(&target, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(r.is_err());
        assert!(!target.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temporary file left behind"
        );
    }

    #[test]
    fn successful_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        write_atomic::<std::io::Error>(&target, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn modes_are_set_explicitly() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let public = dir.path().join("public.bin");
        write_atomic::<std::io::Error>(&public, |w| w.write_all(b"x")).unwrap();
        assert_eq!(mode(&public), 0o644);
        let private = dir.path().join("private.bin");
        write_atomic_private::<std::io::Error>(&private, |w| w.write_all(b"x")).unwrap();
        assert_eq!(mode(&private), 0o600);
    }
}
