//! virtio over MMIO: finding devices, starting them, and one request queue per device.
//!
//! virtio (OASIS virtio 1.2) is how virtual machines talk to virtual devices without pretending
//! to be real hardware. A device has a few registers, here in a 4 KiB window of memory-mapped
//! I/O (the "virtio-mmio transport", spec §4.2.2), and *virtqueues*: rings in guest RAM where the
//! driver leaves requests and the device leaves answers. Every register access is a VM exit, so a
//! driver touches registers rarely: it fills the rings in plain memory, writes one register
//! ("notify") to say "look at the queue", and the device raises an interrupt when it is done.
//!
//! mini-kvm always has 8 slots, slot i at `0xd000_0000 + i * 0x1000` on IRQ `5 + i`; an empty
//! slot says DeviceID 0. `--disk FILE` fills slots from 0, then `--net` cards, then `--rng`
//! (docs/os.md): the kernel looks for DeviceIDs, not slot numbers.
//!
//! One *split virtqueue* (spec §2.7) is three arrays in RAM, whose physical addresses the driver
//! writes into the device's registers:
//!
//! * the **descriptor table**: buffers (address, length, flags). A request is a chain of them,
//!   linked by `next`; the flag `WRITE` marks a buffer the device writes (a read's data, a
//!   status byte), its absence one the device only reads;
//! * the **available ring**, written by the driver: the first descriptor of each new request,
//!   and an index that counts the requests ever made available;
//! * the **used ring**, written by the device: the requests it finished (and how many bytes it
//!   wrote), and its own index.
//!
//! This kernel keeps one request in flight per device (the caller waits for it), so a request's
//! chain always starts at descriptor 0. The kernel's memory is identity-mapped (virtual =
//! physical), so the address of a static is what the device is given.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{Ordering, compiler_fence};

use crate::paging::VIRTIO_WINDOW;
use crate::process;

pub const SLOTS: usize = 8;
const SLOT_SIZE: u64 = 0x1000;
/// Slot i interrupts on IRQ FIRST_IRQ + i.
pub const FIRST_IRQ: u64 = 5;

// The registers (spec §4.2.2, "modern" version 2), offsets in the slot's window; all 32 bits.
const MAGIC_VALUE: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const INTERRUPT_STATUS: u64 = 0x060;
const INTERRUPT_ACK: u64 = 0x064;
const STATUS: u64 = 0x070;
const QUEUE_DESC: u64 = 0x080; // low 32 bits; the high half follows at +4
const QUEUE_DRIVER: u64 = 0x090; // the available ring
const QUEUE_DEVICE: u64 = 0x0a0; // the used ring
const CONFIG_GENERATION: u64 = 0x0fc;
/// The device-specific configuration (a disk's capacity...) starts here.
const CONFIG: u64 = 0x100;

/// "virt", little-endian.
const MAGIC: u32 = 0x7472_6976;

// The Status register: the driver sets these bits one after the other (spec §3.1.1).
const ACKNOWLEDGE: u32 = 1; // "I have seen a virtio device"
const DRIVER: u32 = 2; // "I know how to drive it"
const DRIVER_OK: u32 = 4; // "ready: requests may come"
const FEATURES_OK: u32 = 8; // "these features, please" (the device may refuse)
const FAILED: u32 = 128; // "I give up on this device"

/// Feature bit 32: the device follows virtio 1.x (not the legacy 0.9 layout). A modern device
/// refuses a driver that does not accept it.
pub const F_VERSION_1: u64 = 1 << 32;

pub const ID_BLOCK: u32 = 2;
pub const ID_ENTROPY: u32 = 4;

pub fn slot_address(slot: usize) -> u64 {
    VIRTIO_WINDOW + slot as u64 * SLOT_SIZE
}

pub fn slot_irq(slot: usize) -> u64 {
    FIRST_IRQ + slot as u64
}

fn read(base: u64, offset: u64) -> u32 {
    // SAFETY: the slot windows are mapped uncached in every address space (paging.rs).
    // Volatile: every access is a real register access (a VM exit), never merged or skipped.
    unsafe { read_volatile((base + offset) as *const u32) }
}

fn write(base: u64, offset: u64, value: u32) {
    unsafe { write_volatile((base + offset) as *mut u32, value) }
}

/// The DeviceID in each slot: 0 for an empty slot or one that is not virtio-mmio version 2.
/// (Each read is a VM exit: an empty slot costs two, its Version is not asked.)
pub fn scan() -> [u32; SLOTS] {
    let mut ids = [0; SLOTS];
    for (slot, id) in ids.iter_mut().enumerate() {
        let base = slot_address(slot);
        if read(base, MAGIC_VALUE) != MAGIC {
            continue;
        }
        let device = read(base, DEVICE_ID);
        if device != 0 && read(base, VERSION) == 2 {
            *id = device;
        }
    }
    ids
}

/// The queue size this driver uses (the device allows up to its QueueNumMax): one request at a
/// time needs 3 descriptors at most; 8 keeps the rings in a fraction of a page.
pub const QUEUE_SIZE: usize = 8;

/// One buffer of a request (spec §2.7.5).
#[repr(C)]
#[derive(Clone, Copy)]
struct Descriptor {
    address: u64,
    length: u32,
    flags: u16,
    /// The next descriptor of the chain, if `flags` has NEXT.
    next: u16,
}

const NEXT: u16 = 1;
const WRITE: u16 = 2;

#[repr(C)]
struct AvailableRing {
    flags: u16,
    /// Requests ever made available (wraps at 65536); the device reads up to here.
    index: u16,
    ring: [u16; QUEUE_SIZE],
    used_event: u16, // unused: no VIRTIO_F_EVENT_IDX
}

#[repr(C)]
#[derive(Clone, Copy)]
struct UsedElement {
    /// The first descriptor of the finished request.
    id: u32,
    /// How many bytes the device wrote into its buffers.
    length: u32,
}

#[repr(C)]
struct UsedRing {
    flags: u16,
    /// Requests ever finished; the device moves it, the driver watches it.
    index: u16,
    ring: [UsedElement; QUEUE_SIZE],
    avail_event: u16,
}

/// A queue's memory: the three parts, aligned as the spec asks (16, 2 and 4 bytes; a page here).
/// Each driver has one in a zeroed static.
#[repr(C, align(4096))]
pub struct QueueMemory {
    descriptors: [Descriptor; QUEUE_SIZE],
    available: AvailableRing,
    used: UsedRing,
}

impl QueueMemory {
    pub const fn new() -> QueueMemory {
        // SAFETY: all integers: zero is a valid (empty) queue.
        unsafe { core::mem::zeroed() }
    }
}

/// A buffer of a request: the device reads it, or writes it (`device_writes`).
pub struct Buffer {
    pub address: u64,
    pub length: u32,
    pub device_writes: bool,
}

/// A started device with its queue 0.
pub struct Device {
    pub slot: usize,
    base: u64,
    pub features: u64,
    /// Raw pointer, and volatile accesses: the device changes the used ring behind the
    /// compiler's back.
    queue: *mut QueueMemory,
    /// Our copy of the available index, and how far we have read the used ring.
    next_available: u16,
    last_used: u16,
    /// The device did not answer a request in time: we gave up on it.
    failed: bool,
}

/// How long a request may take before the driver gives up on the device: 10 s.
const TIMEOUT_MS: u64 = 10_000;

impl Device {
    /// Starts the device in `slot` (spec §3.1.1) with the features in `wanted` that it offers
    /// (VERSION_1 must be among them), its queue 0 in `queue`.
    pub fn start(
        slot: usize,
        wanted: u64,
        queue: &'static mut QueueMemory,
    ) -> Result<Device, &'static [u8]> {
        let base = slot_address(slot);
        write(base, STATUS, 0); // reset
        write(base, STATUS, ACKNOWLEDGE);
        write(base, STATUS, ACKNOWLEDGE | DRIVER);
        // 64 feature bits, read and written as two 32-bit halves chosen by the *Sel registers.
        write(base, DEVICE_FEATURES_SEL, 0);
        let low = read(base, DEVICE_FEATURES);
        write(base, DEVICE_FEATURES_SEL, 1);
        let offered = u64::from(read(base, DEVICE_FEATURES)) << 32 | u64::from(low);
        let features = offered & wanted;
        let fail = |why: &'static [u8]| {
            write(base, STATUS, FAILED);
            Err(why)
        };
        if features & F_VERSION_1 == 0 {
            return fail(b"it does not offer VIRTIO_F_VERSION_1 (a legacy device)");
        }
        write(base, DRIVER_FEATURES_SEL, 0);
        write(base, DRIVER_FEATURES, features as u32);
        write(base, DRIVER_FEATURES_SEL, 1);
        write(base, DRIVER_FEATURES, (features >> 32) as u32);
        write(base, STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        if read(base, STATUS) & FEATURES_OK == 0 {
            return fail(b"it refused our features");
        }

        // Queue 0: its size, then where its three parts are, then "ready".
        write(base, QUEUE_SEL, 0);
        if (read(base, QUEUE_NUM_MAX) as usize) < QUEUE_SIZE {
            return fail(b"its queue 0 is missing or too small");
        }
        write(base, QUEUE_NUM, QUEUE_SIZE as u32);
        let memory: *mut QueueMemory = queue;
        // SAFETY: only the addresses of the fields are taken.
        let (descriptors, available, used) = unsafe {
            (
                addr_of!((*memory).descriptors) as u64,
                addr_of!((*memory).available) as u64,
                addr_of!((*memory).used) as u64,
            )
        };
        for (register, address) in [
            (QUEUE_DESC, descriptors),
            (QUEUE_DRIVER, available),
            (QUEUE_DEVICE, used),
        ] {
            write(base, register, address as u32);
            write(base, register + 4, (address >> 32) as u32);
        }
        write(base, QUEUE_READY, 1);
        write(base, STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        Ok(Device {
            slot,
            base,
            features,
            queue: memory,
            next_available: 0,
            last_used: 0,
            failed: false,
        })
    }

    /// A 32-bit field of the device's configuration, at `offset` from its start.
    pub fn config_u32(&self, offset: u64) -> u32 {
        read(self.base, CONFIG + offset)
    }

    /// A 64-bit field of the configuration: two 32-bit reads, repeated if the device changed the
    /// configuration in between (ConfigGeneration moved; spec §4.2.2.2).
    pub fn config_u64(&self, offset: u64) -> u64 {
        loop {
            let generation = read(self.base, CONFIG_GENERATION);
            let low = self.config_u32(offset);
            let high = self.config_u32(offset + 4);
            if read(self.base, CONFIG_GENERATION) == generation {
                return u64::from(high) << 32 | u64::from(low);
            }
        }
    }

    /// Makes one request of `buffers` (a chain, in order) and waits until the device has
    /// finished it. Returns how many bytes the device wrote, or `None` if it did not answer in
    /// time (the device is then marked FAILED and every later request fails too).
    ///
    /// The buffers must be in the kernel's identity-mapped memory: their addresses go to the
    /// device as physical addresses.
    pub fn request(&mut self, buffers: &[Buffer]) -> Option<u32> {
        assert!(!buffers.is_empty() && buffers.len() <= QUEUE_SIZE);
        if self.failed {
            return None;
        }
        let queue = self.queue;
        // 1. The chain, in descriptors 0, 1, 2...
        for (i, buffer) in buffers.iter().enumerate() {
            let mut flags = if buffer.device_writes { WRITE } else { 0 };
            if i + 1 < buffers.len() {
                flags |= NEXT;
            }
            let descriptor = Descriptor {
                address: buffer.address,
                length: buffer.length,
                flags,
                next: (i + 1) as u16,
            };
            // SAFETY: our queue memory; `i` < QUEUE_SIZE.
            unsafe { write_volatile(addr_of_mut!((*queue).descriptors[i]), descriptor) };
        }
        // 2. Its head (descriptor 0) in the next slot of the available ring, then the index.
        //    x86 keeps stores in order, so the fence only has to stop the *compiler* from
        //    moving the index store before the others (no `mfence`, an SSE2 instruction).
        let slot = usize::from(self.next_available) % QUEUE_SIZE;
        unsafe { write_volatile(addr_of_mut!((*queue).available.ring[slot]), 0) };
        compiler_fence(Ordering::SeqCst);
        self.next_available = self.next_available.wrapping_add(1);
        unsafe { write_volatile(addr_of_mut!((*queue).available.index), self.next_available) };
        compiler_fence(Ordering::SeqCst);
        // 3. Notify: "queue 0 has news". One VM exit; mini-kvm looks at the ring.
        write(self.base, QUEUE_NOTIFY, 0);
        // 4. Wait until the used index moves. Not by reading it in a tight loop (every guest
        //    instruction is emulated on our hosts): `sti; hlt` sleeps until an interrupt, which
        //    is the device's (IRQ 5 + slot, see `interrupt`) or the timer's. `sti` delays
        //    interrupts by one instruction, so none can slip in between it and `hlt`.
        let deadline = process::uptime_ms() + TIMEOUT_MS;
        while unsafe { read_volatile(addr_of!((*queue).used.index)) } == self.last_used {
            if process::uptime_ms() > deadline {
                write(self.base, STATUS, FAILED);
                self.failed = true;
                return None;
            }
            // No `nomem`: the compiler must read the ring again afterwards.
            unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack)) };
        }
        // An empty `asm!` without `nomem`: the compiler must assume it changed any memory whose
        // address escaped, so after this it reads the device's data from RAM, not from what it
        // remembers (the device wrote behind its back).
        unsafe { core::arch::asm!("", options(nostack, preserves_flags)) };
        let slot = usize::from(self.last_used) % QUEUE_SIZE;
        let element = unsafe { read_volatile(addr_of!((*queue).used.ring[slot])) };
        self.last_used = self.last_used.wrapping_add(1);
        Some(element.length)
    }
}

/// IRQ `irq` (5-12), a virtio slot's: read why (bit 0: the used ring moved; bit 1: the
/// configuration changed) and acknowledge exactly that, so the device may interrupt again.
/// The waiting request (above) then finds the used index moved.
pub fn interrupt(irq: u64) {
    let base = slot_address((irq - FIRST_IRQ) as usize);
    let status = read(base, INTERRUPT_STATUS);
    write(base, INTERRUPT_ACK, status);
}
