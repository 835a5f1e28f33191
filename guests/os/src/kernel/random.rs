//! Randomness: a virtio entropy device (spec §5.4), `--rng` on mini-kvm's command line.
//!
//! The simplest virtio device there is: one queue, no configuration. The driver hands it empty
//! buffers (device-writable); it fills them with random bytes (mini-kvm takes them from the
//! host's `getrandom`) and says how many it wrote.

use crate::abi::{ERROR_IO, ERROR_NO_DEVICE};
use crate::cell::KernelCell;
use crate::pic;
use crate::virtio::{self, Buffer, Device, F_VERSION_1, QueueMemory};

/// The most one `random` system call returns.
pub const MAX: usize = 256;

static QUEUE: KernelCell<QueueMemory> = KernelCell::new(QueueMemory::new());
/// Where the device writes: kernel memory, physical = virtual.
static BUFFER: KernelCell<[u8; MAX]> = KernelCell::new([0; MAX]);
static RNG: KernelCell<Option<Device>> = KernelCell::new(None);

pub fn start(slot: usize) -> Result<(), &'static [u8]> {
    *RNG.get() = Some(Device::start(slot, F_VERSION_1, QUEUE.get())?);
    pic::unmask(virtio::slot_irq(slot));
    Ok(())
}

pub fn slot() -> Option<usize> {
    RNG.get().as_ref().map(|device| device.slot)
}

/// Fills `out` (at most MAX bytes) with random bytes; asks again while the device gives fewer.
pub fn fill(out: &mut [u8]) -> Result<(), i64> {
    let device = RNG.get().as_mut().ok_or(ERROR_NO_DEVICE)?;
    let buffer = BUFFER.get();
    let mut filled = 0;
    while filled < out.len() {
        let wanted = out.len() - filled;
        let written = device
            .request(&[Buffer {
                address: buffer.as_mut_ptr() as u64,
                length: wanted as u32,
                device_writes: true,
            }])
            .ok_or(ERROR_IO)? as usize;
        let written = written.min(wanted);
        if written == 0 {
            return Err(ERROR_IO);
        }
        out[filled..filled + written].copy_from_slice(&buffer[..written]);
        filled += written;
    }
    Ok(())
}
