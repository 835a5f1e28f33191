//! A file mini-kvm writes for its user (`--screen-dump`, `--screenshot`, `initramfs -o`,
//! `symbols -o`), written so that another local user cannot turn it against them, and so that
//! a run that fails leaves nothing half-written:
//!
//! - it is written as a **new** file, created with `O_EXCL | O_NOFOLLOW` (mode 0644, less the
//!   umask) beside its target, in the same directory, and **renamed** over the target when
//!   complete. No existing file is ever opened for writing or truncated: a link planted where a
//!   temporary name goes makes the creation fail, not write through it;
//! - an existing **symbolic link** at the target is refused with an error (in a shared
//!   directory like /tmp, another user may have planted it to point at one of the runner's
//!   files); so is anything there that is not a regular file (a directory, a device, a FIFO);
//! - if the file is dropped before [`OutputFile::commit`], the new file is removed: the target
//!   is left as it was (or absent).
//!
//! The directory is held open from the start, and the creation, the rename and the removal
//! are made relative to it (`openat`, `renameat2`, `unlinkat`): the file ends up in the
//! directory that was checked. That descriptor is also what the seccomp filters are told
//! about when the rename happens once a guest has run ([`OutputFile::directory`]).

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OutputFileError {
    #[error(
        "{0} is a symbolic link: mini-kvm does not write through one (give the file it points \
         to, or remove the link)"
    )]
    SymbolicLink(PathBuf),
    #[error("{0} exists and is not a regular file")]
    NotARegularFile(PathBuf),
    #[error("{0} does not name a file")]
    NoFileName(PathBuf),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A new file being written, to be renamed over its target by [`OutputFile::commit`].
pub struct OutputFile {
    /// The target's directory, open (`O_PATH`): every call below is relative to it.
    directory: OwnedFd,
    /// The target's name in it, and the new file's.
    name: CString,
    temporary: CString,
    file: File,
    /// The path as the user gave it, for messages.
    path: PathBuf,
    committed: bool,
}

impl OutputFile {
    /// Checks the target (absent, or a regular file) and creates the new file beside it.
    pub fn create(path: &Path) -> Result<OutputFile, OutputFileError> {
        let io_error = |source| OutputFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let Some(name) = path.file_name() else {
            return Err(OutputFileError::NoFileName(path.to_path_buf()));
        };
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let directory = open_directory(parent).map_err(io_error)?;
        let name = c_string(name);
        match lstat_in(directory.as_fd(), &name) {
            Ok(mode) if mode & libc::S_IFMT == libc::S_IFLNK => {
                return Err(OutputFileError::SymbolicLink(path.to_path_buf()));
            }
            Ok(mode) if mode & libc::S_IFMT != libc::S_IFREG => {
                return Err(OutputFileError::NotARegularFile(path.to_path_buf()));
            }
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(error)),
        }
        let (temporary, file) =
            create_beside(directory.as_fd(), name.as_bytes()).map_err(io_error)?;
        Ok(OutputFile {
            directory,
            name,
            temporary,
            file,
            path: path.to_path_buf(),
            committed: false,
        })
    }

    /// The target's directory: the one the rename (and, on failure, the removal) is made in.
    pub fn directory(&self) -> BorrowedFd<'_> {
        self.directory.as_fd()
    }

    /// The path as the user gave it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` to the new file.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), OutputFileError> {
        self.file
            .write_all(bytes)
            .map_err(|source| OutputFileError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Renames the new file over the target: it appears complete, in one step. A symbolic
    /// link put at the target since [`OutputFile::create`] is replaced, never followed.
    pub fn commit(mut self) -> Result<(), OutputFileError> {
        let directory = self.directory.as_raw_fd();
        // renameat2 with no flags, called directly: it is the call the seccomp filters allow
        // (glibc's renameat may use another).
        // SAFETY: two NUL-terminated names and an open directory descriptor.
        let result = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                directory,
                self.temporary.as_ptr(),
                directory,
                self.name.as_ptr(),
                0,
            )
        };
        if result != 0 {
            return Err(OutputFileError::Io {
                path: self.path.clone(),
                source: io::Error::last_os_error(),
            });
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for OutputFile {
    /// Not committed: the new file goes, and the target stays as it was.
    fn drop(&mut self) {
        if !self.committed {
            // SAFETY: a NUL-terminated name and an open directory descriptor.
            unsafe {
                libc::unlinkat(self.directory.as_raw_fd(), self.temporary.as_ptr(), 0);
            }
        }
    }
}

fn c_string(name: &OsStr) -> CString {
    // A file name from a Path has no NUL (the kernel could not have given one).
    CString::new(name.as_bytes()).unwrap_or_default()
}

/// Opens `path` as a directory, for `*at` calls only (`O_PATH`: no reading, no writing).
fn open_directory(path: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path; the descriptor returned is ours.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The type and mode of `name` in `directory`, not following a link.
fn lstat_in(directory: BorrowedFd, name: &CString) -> io::Result<libc::mode_t> {
    // SAFETY: a NUL-terminated name, an open descriptor and a stat buffer for the kernel.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let result = unsafe {
        libc::fstatat(
            directory.as_raw_fd(),
            name.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.st_mode)
}

/// Creates a new file `.NAME.mini-kvm-XXXXXXXX` in `directory`, write-only: `O_EXCL` and
/// `O_NOFOLLOW`, so that a name another user made first (a file, a link) is never opened, and
/// the next name is tried instead.
fn create_beside(directory: BorrowedFd, name: &[u8]) -> io::Result<(CString, File)> {
    let mut last_error = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..64 {
        let mut random = [0u8; 4];
        // SAFETY: a buffer of its length for the kernel to fill.
        unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
        let mut temporary = b".".to_vec();
        temporary.extend_from_slice(name);
        temporary
            .extend_from_slice(format!(".mini-kvm-{:08x}", u32::from_ne_bytes(random)).as_bytes());
        let temporary = CString::new(temporary).unwrap_or_default();
        // SAFETY: a NUL-terminated name and an open directory; the descriptor returned is ours.
        let fd = unsafe {
            libc::openat(
                directory.as_raw_fd(),
                temporary.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            )
        };
        if fd >= 0 {
            // SAFETY: a descriptor just opened, owned by nobody else.
            return Ok((temporary, unsafe { File::from_raw_fd(fd) }));
        }
        last_error = io::Error::last_os_error();
        if last_error.kind() != io::ErrorKind::AlreadyExists {
            break;
        }
    }
    Err(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mini-kvm-output-file-{}-{test}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn the_file_appears_only_when_complete() {
        let dir = scratch("complete");
        let path = dir.join("out.txt");
        let mut file = OutputFile::create(&path).unwrap();
        file.write_all(b"half").unwrap();
        assert!(!path.exists());
        file.write_all(b" and the rest").unwrap();
        file.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"half and the rest");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_dropped_file_leaves_the_old_one() {
        let dir = scratch("dropped");
        let path = dir.join("out.txt");
        std::fs::write(&path, b"old").unwrap();
        let mut file = OutputFile::create(&path).unwrap();
        file.write_all(b"new").unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_and_directories_are_refused() {
        let dir = scratch("refused");
        std::os::unix::fs::symlink("/nowhere", dir.join("dangling")).unwrap();
        assert!(matches!(
            OutputFile::create(&dir.join("dangling")),
            Err(OutputFileError::SymbolicLink(_))
        ));
        assert!(matches!(
            OutputFile::create(&dir),
            Err(OutputFileError::NotARegularFile(_))
        ));
        assert!(matches!(
            OutputFile::create(Path::new("/")),
            Err(OutputFileError::NoFileName(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
