//! Flat binaries: raw machine code copied to a fixed load address, 0x10000 in every mode.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{GuestMode, LoaderError};
use crate::arch::x86::layout::{FLAT_LOAD_ADDRESS, REAL_MODE_ADDRESS_LIMIT, low_ram_end};

/// Copies a flat image to 0x10000 for a guest starting in `mode`. It must fit in guest RAM and,
/// in real mode, below 1 MiB, the most real mode can address. (`loader::load` has already
/// refused an empty image.)
pub fn load_flat_image(
    memory: &GuestMemoryMmap,
    name: &str,
    image: &[u8],
    mode: GuestMode,
) -> Result<(), LoaderError> {
    let ram_end = low_ram_end(super::ram_size(memory));
    let (limit, limit_what, hint) = if mode == GuestMode::Real && ram_end >= REAL_MODE_ADDRESS_LIMIT
    {
        (
            REAL_MODE_ADDRESS_LIMIT,
            "the 1 MiB that real mode can address",
            ": a real-mode program cannot be that large",
        )
    } else {
        (
            ram_end,
            "the end of guest RAM",
            ": give the guest more memory with --mem",
        )
    };
    let room = limit - FLAT_LOAD_ADDRESS;
    if image.len() as u64 > room {
        return Err(LoaderError::TooLarge {
            name: name.to_string(),
            size: image.len() as u64,
            room,
            load_address: FLAT_LOAD_ADDRESS,
            limit,
            limit_what,
            hint,
        });
    }
    memory.write_slice(image, GuestAddress(FLAT_LOAD_ADDRESS))?;
    Ok(())
}
