//! Limits on what a command line may ask of the machine, shared by every binary.

/// Largest model shape any reader accepts (the `.flm` header, a checkpoint's config): far
/// above any FlashLM model, small enough that a damaged file cannot ask for terabytes.
pub mod shape {
    /// Vocabulary: token ids are u16.
    pub const MAX_VOCAB: usize = u16::MAX as usize + 1;
    /// Width d.
    pub const MAX_DIM: usize = 1 << 14;
    /// Blocks.
    pub const MAX_BLOCKS: usize = 1024;
    /// GLU hidden width h.
    pub const MAX_HIDDEN: usize = 1 << 16;
    /// Conv taps k.
    pub const MAX_TAPS: usize = 1024;
    /// Training context.
    pub const MAX_SEQ_LEN: usize = 1 << 24;
}

/// Worker threads allowed per core. More only slows a step down (each extra thread adds a
/// slice of work and a wake-up, and none of them runs at the same time), and a mistyped
/// `--threads 20000` would spend minutes creating threads.
pub const MAX_THREADS_PER_CORE: usize = 4;

/// The cores this process may use (1 if the OS cannot tell).
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Check a `--threads` value: at least 1 and at most [`MAX_THREADS_PER_CORE`] x the cores.
pub fn check_threads(n: usize) -> Result<usize, String> {
    check_threads_for(n, cores())
}

fn check_threads_for(n: usize, cores: usize) -> Result<usize, String> {
    let max = MAX_THREADS_PER_CORE * cores;
    if n == 0 {
        return Err("--threads must be at least 1".into());
    }
    if n > max {
        return Err(format!(
            "--threads {n} is more than {MAX_THREADS_PER_CORE} per core ({cores} cores here): use at most {max}"
        ));
    }
    Ok(n)
}

/// What a file that is not regular is, for messages: "a directory" or "not a regular file
/// (a device, FIFO or socket)".
pub fn not_regular(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() { "a directory" } else { "not a regular file (a device, FIFO or socket)" }
}

/// Read a whole input file, refusing anything that is not a regular file (`/dev/zero`, a FIFO,
/// a directory): those have no size and could be read until memory runs out. Symlinks are
/// followed. At most the size the file had when opened is read.
pub fn read_regular(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {}", not_regular(&meta.file_type())),
        ));
    }
    let len = meta.len();
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(target_os = "wasi", ignore = "WASI has no temp_dir (tempfile); runs natively and on aarch64")]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_regular(&p).unwrap(), b"hello");
        assert!(read_regular(dir.path()).unwrap_err().to_string().contains("directory"));
        #[cfg(unix)]
        assert!(
            read_regular(std::path::Path::new("/dev/zero"))
                .unwrap_err()
                .to_string()
                .contains("not a regular")
        );
    }

    #[test]
    fn threads_are_bounded_by_the_cores() {
        assert_eq!(check_threads_for(1, 2), Ok(1));
        assert_eq!(check_threads_for(8, 2), Ok(8));
        assert!(check_threads_for(0, 2).unwrap_err().contains("at least 1"));
        let e = check_threads_for(20_000, 2).unwrap_err();
        assert!(e.contains("20000") && e.contains("at most 8"), "{e}");
        assert!(check_threads(cores()).is_ok());
    }
}
