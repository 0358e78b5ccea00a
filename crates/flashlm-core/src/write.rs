//! Crash-safe file writes: write to a temp file beside the target, fsync, rename.
//!
//! - A symlink at the target is written through: its (final) target is replaced, the link stays.
//! - Anything that is not a regular file (a device node, a FIFO, a directory) is refused, never
//!   replaced.
//! - [`write_atomic_keeping`] keeps the previous versions as `NAME.1.EXT`, `NAME.2.EXT`, ...
//! - A process killed mid-write leaves `.NAME.tmp-PID`; [`remove_stale_temps`] deletes those of
//!   processes that no longer exist.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Symlinks followed before giving up (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// The temp path used while writing `path` (same directory, so the rename is atomic).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// The file a write to `path` replaces: `path` itself, or the end of the symlink chain at
/// `path` (which may not exist yet). Refuses anything that exists and is not a regular file.
pub fn write_target(path: &Path) -> io::Result<PathBuf> {
    let mut cur = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        let meta = match fs::symlink_metadata(&cur) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(cur),
            Err(e) => return Err(e),
            Ok(m) => m,
        };
        let kind = meta.file_type();
        if kind.is_file() {
            return Ok(cur);
        }
        if !kind.is_symlink() {
            let what = crate::limits::not_regular(&kind);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is {what}; refusing to replace it (write to a regular file path)", cur.display()),
            ));
        }
        let link = fs::read_link(&cur)?;
        cur = match cur.parent() {
            Some(dir) if link.is_relative() => dir.join(link),
            _ => link,
        };
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: too many levels of symlinks", path.display()),
    ))
}

/// Write a file through `fill`, atomically: readers see either the old file or the whole new
/// one, never a part. On error the temp file is removed and the old file is untouched.
pub fn write_atomic_with<F>(path: &Path, fill: F) -> io::Result<()>
where
    F: FnOnce(&mut io::BufWriter<&File>) -> io::Result<()>,
{
    write_impl(path, 1, fill)
}

/// Write `bytes` to `path` atomically (see [`write_atomic_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_impl(path, 1, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], but keep the `keep - 1` previous versions of the file beside it as
/// [`backup_path`]`(path, 1)` (the newest), `(path, 2)`, ... At every moment `path` holds a
/// whole file, old or new.
pub fn write_atomic_keeping(path: &Path, bytes: &[u8], keep: usize) -> io::Result<()> {
    write_impl(path, keep.max(1), |w| w.write_all(bytes))
}

/// `dir/NAME.i.EXT` for `dir/NAME.EXT` (`latest.ckpt` -> `latest.1.ckpt`).
pub fn backup_path(path: &Path, i: usize) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    match path.extension() {
        Some(ext) => path.with_file_name(format!("{stem}.{i}.{}", ext.to_string_lossy())),
        None => path.with_file_name(format!("{stem}.{i}")),
    }
}

fn write_impl<F>(path: &Path, keep: usize, fill: F) -> io::Result<()>
where
    F: FnOnce(&mut io::BufWriter<&File>) -> io::Result<()>,
{
    let target = write_target(path)?;
    let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).map(Path::to_path_buf);
    if let Some(d) = &dir {
        fs::create_dir_all(d)?;
    }
    let tmp = temp_path(&target);
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = io::BufWriter::new(&file);
        fill(&mut w)?;
        w.flush()?;
        drop(w);
        file.sync_all()?;
        if keep > 1 && target.is_file() {
            rotate(&target, keep)?;
        }
        fs::rename(&tmp, &target)?;
        // Persist the rename itself.
        if let Some(d) = &dir
            && let Ok(d) = File::open(d)
        {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Shift `path.1 .. path.(keep-2)` up by one and make `path.1` a copy of `path` (a hard link
/// where the file system has them), each step a rename, so no version is ever half-written.
fn rotate(path: &Path, keep: usize) -> io::Result<()> {
    for i in (1..keep - 1).rev() {
        let from = backup_path(path, i);
        if from.is_file() {
            fs::rename(&from, backup_path(path, i + 1))?;
        }
    }
    let first = backup_path(path, 1);
    let tmp = temp_path(&first);
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(path, &tmp).is_err() {
        fs::copy(path, &tmp)?;
        File::open(&tmp)?.sync_all()?;
    }
    fs::rename(&tmp, &first)
}

/// Whether process `pid` exists. Only Linux can tell (`/proc`); elsewhere every process is
/// assumed alive, so nothing is removed.
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") { Path::new("/proc").join(pid.to_string()).exists() } else { true }
}

/// Remove the temp files (`.NAME.tmp-PID`) that processes killed mid-write left in `dir`, when
/// that process is gone. Returns the files removed. A missing `dir` has none.
pub fn remove_stale_temps(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r?,
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(".tmp-"))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(target_os = "wasi", ignore = "WASI has no temp_dir (tempfile); runs natively and on aarch64")]
    fn failed_write_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("boom"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert!(!temp_path(&p).exists());
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_written_through_and_special_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.bin");
        write_atomic(&real, b"old").unwrap();
        let link = dir.path().join("link.bin");
        std::os::unix::fs::symlink("real.bin", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays a link");
        assert_eq!(fs::read(&real).unwrap(), b"new");
        // A dangling link creates its target.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink("made.bin", &dangling).unwrap();
        write_atomic(&dangling, b"x").unwrap();
        assert_eq!(fs::read(dir.path().join("made.bin")).unwrap(), b"x");
        // A loop is an error, not a hang.
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::os::unix::fs::symlink("b", &a).unwrap();
        std::os::unix::fs::symlink("a", &b).unwrap();
        assert!(write_atomic(&a, b"x").unwrap_err().to_string().contains("symlinks"));
        // Directories and device nodes are refused and left alone.
        let e = write_atomic(dir.path(), b"x").unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        let e = write_atomic(Path::new("/dev/null"), b"x").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(!fs::metadata("/dev/null").unwrap().is_file());
    }

    #[test]
    #[cfg_attr(target_os = "wasi", ignore = "WASI has no temp_dir (tempfile); runs natively and on aarch64")]
    fn keeping_rotates_previous_versions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("latest.ckpt");
        assert_eq!(backup_path(&p, 1), dir.path().join("latest.1.ckpt"));
        for v in 0..5u8 {
            write_atomic_keeping(&p, &[v], 3).unwrap();
        }
        assert_eq!(fs::read(&p).unwrap(), [4]);
        assert_eq!(fs::read(backup_path(&p, 1)).unwrap(), [3]);
        assert_eq!(fs::read(backup_path(&p, 2)).unwrap(), [2]);
        assert!(!backup_path(&p, 3).exists());
        // keep = 1: no backups.
        let q = dir.path().join("plain.bin");
        write_atomic_keeping(&q, b"a", 1).unwrap();
        write_atomic_keeping(&q, b"b", 1).unwrap();
        assert!(!backup_path(&q, 1).exists());
    }

    #[test]
    #[cfg_attr(target_os = "wasi", ignore = "WASI has no temp_dir (tempfile); runs natively and on aarch64")]
    fn stale_temps_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // PIDs above the kernel's maximum (4194304) never exist.
        let dead = dir.path().join(".latest.ckpt.tmp-999999999");
        let mine = temp_path(&dir.path().join("latest.ckpt"));
        let other = dir.path().join(".notes.txt");
        for f in [&dead, &mine, &other] {
            fs::write(f, b"x").unwrap();
        }
        let removed = remove_stale_temps(dir.path()).unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(removed, vec![dead.clone()]);
            assert!(!dead.exists());
        }
        assert!(mine.exists() && other.exists());
        assert!(remove_stale_temps(&dir.path().join("missing")).unwrap().is_empty());
    }
}
