//! Flat binaries: raw machine code copied to a fixed load address.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::LoaderError;
use crate::vmm::memory::{REAL_MODE_ADDRESS_LIMIT, REAL_MODE_LOAD_ADDRESS};

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
