//! What goes into guest memory, nothing else: built-in guests, image format detection, and
//! placing an image at its load address.

pub mod builtin;
pub mod detect;
pub mod flat;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub use builtin::{BuiltinGuest, GuestMode, builtin_guest, builtin_guests};
pub use detect::ImageFormat;

#[derive(Debug, Error)]
pub enum LoaderError {
    #[error("cannot read guest image {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("guest image {path} is a directory, not a file")]
    IsDirectory { path: PathBuf },
    #[error("guest image {name} is empty: there is nothing to run")]
    Empty { name: String },
    #[error(
        "guest image {name} is {size} bytes, but only {room} bytes fit between the load address \
         {load_address:#x} and {limit_what} ({limit:#x}){hint}"
    )]
    TooLarge {
        name: String,
        size: u64,
        room: u64,
        load_address: u64,
        limit: u64,
        limit_what: &'static str,
        hint: &'static str,
    },
    #[error("{name} is {format}: this version of mini-kvm runs only flat binaries")]
    UnsupportedFormat { name: String, format: &'static str },
    #[error("cannot write the image into guest memory: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}

/// The bytes of a guest: embedded for a built-in one, read from disk for a file.
pub fn guest_image(guest: &crate::config::GuestImage) -> Result<Cow<'static, [u8]>, LoaderError> {
    match guest {
        crate::config::GuestImage::Builtin(builtin) => Ok(Cow::Borrowed(builtin.image)),
        crate::config::GuestImage::File(path) => Ok(Cow::Owned(read_image_file(path)?)),
    }
}

/// Reads a guest image from disk, with errors that name the file.
pub fn read_image_file(path: &Path) -> Result<Vec<u8>, LoaderError> {
    if path.is_dir() {
        return Err(LoaderError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    std::fs::read(path).map_err(|source| LoaderError::Read {
        path: path.to_path_buf(),
        source,
    })
}
