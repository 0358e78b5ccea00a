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

/// Open an input file for reading, refusing anything that is not a regular file (`/dev/zero`,
/// a FIFO, a socket, a directory) with an error that says what it is. Every reader of an input
/// path goes through here (or [`read_regular`]): a plain `File::open` of a FIFO blocks until
/// some writer opens the other end, which may be never. On Unix the file is opened with
/// `O_NONBLOCK` (an open that cannot block), checked with `fstat` on the opened descriptor (no
/// race with a rename in between), and only then switched back to blocking reads. Symlinks are
/// followed.
pub fn open_regular(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {}", not_regular(&meta.file_type())),
        ));
    }
    #[cfg(unix)]
    clear_nonblocking(&file)?;
    Ok(file)
}

/// Back to blocking reads on a regular file (reads of a regular file never block, but a
/// descriptor handed on should be what a plain open gives).
#[cfg(unix)]
fn clear_nonblocking(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fd is an open descriptor owned by `file` for the duration of the calls; F_GETFL
    // and F_SETFL read and set its status flags only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above; the third argument of F_SETFL is an int.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Give SIGINT its default action (end the process) back. A program started in the background
/// by a non-interactive shell (`cmd &` in a script) inherits SIGINT as *ignored*, and keeps it
/// so unless it resets it: `kill -INT` then does nothing. Command-line tools without a handler
/// of their own call this first. No effect off Unix.
pub fn default_interrupt() {
    #[cfg(unix)]
    // SAFETY: signal(2) with SIG_DFL installs no handler code; it only resets the disposition.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

/// Read a whole input file through [`open_regular`] (a device, FIFO or directory has no size
/// and could be read until memory runs out). At most the size the file had when opened is
/// read.
pub fn read_regular(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
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

    /// A FIFO with no writer: refused at once (a plain open would block forever), and the
    /// file a regular open gives reads in blocking mode.
    #[test]
    #[cfg(unix)]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: no mkfifo here");
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || tx.send(open_regular(&path).map(|_| ())));
        let got =
            rx.recv_timeout(std::time::Duration::from_secs(10)).expect("open_regular blocked on a FIFO");
        let e = got.unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        assert!(read_regular(&fifo).unwrap_err().to_string().contains("FIFO"));

        let p = dir.path().join("x");
        std::fs::write(&p, b"abc").unwrap();
        let f = open_regular(&p).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: F_GETFL on a descriptor `f` owns.
        let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0, "flags {flags:#o}");
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
