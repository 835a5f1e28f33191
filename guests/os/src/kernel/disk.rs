//! The disk: a virtio-blk device (spec §5.2), `--disk FILE` on mini-kvm's command line.
//!
//! The disk is an array of 512-byte sectors. A request is a chain of three buffers in the
//! device's queue (virtio.rs): a 16-byte header that the device reads (what to do, which
//! sector), the data (the device reads it for a write, writes it for a read), and one status
//! byte that the device writes last. The capacity, in sectors, is in the device's
//! configuration.
//!
//! After every write the driver sends a FLUSH: when `write` returns, the data is on the host's
//! disk, not in a cache between us and it.

use core::ptr::addr_of_mut;

use crate::abi::{ERROR_IO, ERROR_NO_DEVICE, ERROR_READ_ONLY, USER_BASE};
use crate::cell::KernelCell;
use crate::pic;
use crate::virtio::{self, Buffer, Device, F_VERSION_1, QueueMemory};

pub const SECTOR_SIZE: usize = 512;

// Feature bits of a block device.
const F_RO: u64 = 1 << 5; // read-only: writes fail
const F_FLUSH: u64 = 1 << 9; // FLUSH requests are supported

// Request types and status values.
const IN: u32 = 0; // read sectors
const OUT: u32 = 1; // write sectors
const FLUSH: u32 = 4;
const OK: u8 = 0;

#[repr(C)]
struct Header {
    kind: u32,
    reserved: u32,
    sector: u64,
}

/// The parts of a request that are not data, in memory the device can reach.
#[repr(C)]
struct Request {
    header: Header,
    status: u8,
}

pub struct Disk {
    device: Device,
    pub sectors: u64,
    pub read_only: bool,
    flush: bool,
}

static QUEUE: KernelCell<QueueMemory> = KernelCell::new(QueueMemory::new());
static REQUEST: KernelCell<Request> = KernelCell::new(Request {
    header: Header {
        kind: 0,
        reserved: 0,
        sector: 0,
    },
    status: 0,
});
static DISK: KernelCell<Option<Disk>> = KernelCell::new(None);
/// Requests the device has completed since boot (the DISK_REQUESTS system call).
static REQUESTS: KernelCell<u64> = KernelCell::new(0);

/// Starts the block device in `slot`; its IRQ goes through from now on.
pub fn start(slot: usize) -> Result<(), &'static [u8]> {
    let device = Device::start(slot, F_VERSION_1 | F_RO | F_FLUSH, QUEUE.get())?;
    // The configuration's first field: the capacity in 512-byte sectors.
    let sectors = device.config_u64(0);
    let read_only = device.features & F_RO != 0;
    let flush = device.features & F_FLUSH != 0;
    *DISK.get() = Some(Disk {
        device,
        sectors,
        read_only,
        flush,
    });
    pic::unmask(virtio::slot_irq(slot));
    Ok(())
}

/// The disk's slot, size in sectors, and whether it is read-only; `None` without a disk.
pub fn info() -> Option<(usize, u64, bool)> {
    DISK.get()
        .as_ref()
        .map(|disk| (disk.device.slot, disk.sectors, disk.read_only))
}

/// How many requests the device has completed since boot: reads, writes and flushes.
pub fn requests() -> u64 {
    *REQUESTS.get()
}

/// Reads sectors from `sector` on into `buffer` (a whole number of sectors, in kernel memory).
pub fn read(sector: u64, buffer: &mut [u8]) -> Result<(), i64> {
    transfer(IN, sector, buffer.as_mut_ptr() as u64, buffer.len())
}

/// Writes `buffer` (a whole number of sectors, in kernel memory) to the disk from `sector` on,
/// and flushes: when this returns Ok, the data is on the host's disk.
pub fn write(sector: u64, buffer: &[u8]) -> Result<(), i64> {
    let disk = DISK.get().as_ref().ok_or(ERROR_NO_DEVICE)?;
    if disk.read_only {
        return Err(ERROR_READ_ONLY);
    }
    transfer(OUT, sector, buffer.as_ptr() as u64, buffer.len())?;
    transfer(FLUSH, 0, 0, 0)
}

/// One request of type `kind`: the header, the data (none for FLUSH), the status byte.
fn transfer(kind: u32, sector: u64, data: u64, length: usize) -> Result<(), i64> {
    let disk = DISK.get().as_mut().ok_or(ERROR_NO_DEVICE)?;
    if kind == FLUSH && !disk.flush {
        return Ok(()); // the device writes through: nothing to flush
    }
    let count = (length / SECTOR_SIZE) as u64;
    debug_assert!(length.is_multiple_of(SECTOR_SIZE) && data + length as u64 <= USER_BASE);
    if sector
        .checked_add(count)
        .is_none_or(|end| end > disk.sectors)
    {
        return Err(ERROR_IO);
    }
    // A raw pointer, not a reference: the device writes the status byte behind the compiler's
    // back, so it is read with a volatile read below.
    let request: *mut Request = REQUEST.get();
    // SAFETY: our static; no request is in flight.
    unsafe {
        request.write(Request {
            header: Header {
                kind,
                reserved: 0,
                sector,
            },
            status: 0xff, // the device overwrites it
        })
    };
    let header = Buffer {
        address: unsafe { addr_of_mut!((*request).header) } as u64,
        length: size_of::<Header>() as u32,
        device_writes: false,
    };
    let status = Buffer {
        address: unsafe { addr_of_mut!((*request).status) } as u64,
        length: 1,
        device_writes: true,
    };
    let done = if length == 0 {
        disk.device.request(&[header, status])
    } else {
        let data = Buffer {
            address: data,
            length: length as u32,
            device_writes: kind == IN,
        };
        disk.device.request(&[header, data, status])
    };
    if done.is_some() {
        *REQUESTS.get() += 1;
    }
    let status = unsafe { core::ptr::read_volatile(addr_of_mut!((*request).status)) };
    match done {
        Some(_) if status == OK => Ok(()),
        _ => Err(ERROR_IO),
    }
}
