//! Flat binaries: raw machine code copied to a fixed load address, 0x10000 in every mode.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{GuestMode, LoaderError};
use crate::vmm::memory::{FLAT_LOAD_ADDRESS, REAL_MODE_ADDRESS_LIMIT, REAL_MODE_LOAD_ADDRESS};

/// Copies a flat image to 0x10000 for a guest starting in `mode`.
pub fn load_flat_image(
    memory: &GuestMemoryMmap,
    name: &str,
    image: &[u8],
    mode: GuestMode,
) -> Result<(), LoaderError> {
    if mode == GuestMode::Real {
        return load_real_mode_image(memory, name, image);
    }
    // Protected and long mode reach all of RAM: only its end limits the image.
    let ram_end = memory.last_addr().0 + 1;
    let room = ram_end - FLAT_LOAD_ADDRESS;
    if image.len() as u64 > room {
        return Err(LoaderError::TooLarge {
            name: name.to_string(),
            size: image.len() as u64,
            room,
            load_address: FLAT_LOAD_ADDRESS,
            limit: ram_end,
            limit_what: "the end of guest RAM",
            hint: ": give the guest more memory with --mem",
        });
    }
    memory.write_slice(image, GuestAddress(FLAT_LOAD_ADDRESS))?;
    Ok(())
}

/// Copies a real-mode flat image to 0x10000. It must fit below 1 MiB (the most real mode can
/// address) and inside guest RAM.
pub fn load_real_mode_image(
    memory: &GuestMemoryMmap,
    name: &str,
    image: &[u8],
) -> Result<(), LoaderError> {
    if image.is_empty() {
        return Err(LoaderError::Empty {
            name: name.to_string(),
        });
    }
    let ram_end = memory.last_addr().0 + 1;
    let (limit, limit_what, hint) = if ram_end < REAL_MODE_ADDRESS_LIMIT {
        (
            ram_end,
            "the end of guest RAM",
            ": give the guest more memory with --mem",
        )
    } else {
        (
            REAL_MODE_ADDRESS_LIMIT,
            "the 1 MiB that real mode can address",
            ": a real-mode program cannot be that large",
        )
    };
    let room = limit - REAL_MODE_LOAD_ADDRESS;
    if image.len() as u64 > room {
        return Err(LoaderError::TooLarge {
            name: name.to_string(),
            size: image.len() as u64,
            room,
            load_address: REAL_MODE_LOAD_ADDRESS,
            limit,
            limit_what,
            hint,
        });
    }
    memory.write_slice(image, GuestAddress(REAL_MODE_LOAD_ADDRESS))?;
    Ok(())
}
