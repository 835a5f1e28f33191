//! virtio devices over the MMIO transport (virtio 1.2, §2 and §4.2): the way a VMM gives a guest
//! disks, network cards and entropy without emulating real hardware.
//!
//! A virtio device is two halves. The *transport* ([`mmio::MmioTransport`]) is the same for
//! every device: a page of registers where the driver reads the device's ID and features,
//! negotiates, and tells the device where its *virtqueues* are in guest RAM. The *device*
//! ([`VirtioDevice`]: [`block::Block`], [`net::Net`], [`rng::Rng`]) only says what its features and
//! configuration are, and does the work when the driver has put requests on a queue.
//!
//! A virtqueue (the rust-vmm `virtio-queue` crate reads them) is three rings in guest memory:
//! descriptors (address, length, flags: buffers), the *available* ring (the driver's list of
//! requests, each a chain of descriptors), and the *used* ring (the device's list of finished
//! ones). A request costs one doorbell write (QueueNotify, which KVM turns into an eventfd
//! signal without a VM exit: `ioeventfd`) and one interrupt (an eventfd write that KVM turns into
//! an interrupt: `irqfd`). docs/virtio.md follows one request all the way.
//!
//! mini-kvm has [`SLOTS`] fixed transport slots (arch/x86/layout.rs): slot *i* is a page at
//! `VIRTIO_MMIO_START + i * 0x1000` with IRQ `VIRTIO_FIRST_IRQ + i`. Devices fill them in order;
//! the rest answer as empty slots (device ID 0), as on QEMU's `virt` machine, so that a guest can
//! probe them all without knowing which are in use.

pub mod block;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod tap;
#[cfg(test)]
pub(crate) mod tests;

use std::os::fd::RawFd;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemoryMmap;

/// How many transport slots every guest has.
pub const SLOTS: usize = crate::arch::x86::layout::VIRTIO_SLOTS;

/// Device IDs (virtio 1.2 §5).
pub const DEVICE_ID_EMPTY: u32 = 0;
pub const DEVICE_ID_NET: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_NET;
pub const DEVICE_ID_BLOCK: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
pub const DEVICE_ID_RNG: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

/// Feature bit 32: the device follows virtio 1.x (not the "legacy" 0.9 layout). Every device
/// offers it, and a driver that does not accept it is refused.
pub const FEATURE_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// A device behind a transport: what it offers, and the work it does on its queues.
pub trait VirtioDevice: Send {
    /// A short name for traces and messages ("virtio-blk").
    fn name(&self) -> &'static str;
    /// The virtio device ID ([`DEVICE_ID_BLOCK`], ...).
    fn device_id(&self) -> u32;
    /// The feature bits it offers (with [`FEATURE_VERSION_1`]).
    fn features(&self) -> u64;
    /// The most entries each of its queues may have; the number of queues is this slice's length.
    fn queue_sizes(&self) -> &'static [u16];
    /// A read of its configuration space (the transport's offset 0x100 on) at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The driver put requests on queue `index`: do them, and put each on the used ring.
    /// Returns how many were finished (the transport then interrupts the driver). Requests
    /// are taken only while `budget` is not spent, so that one busy queue cannot hold the
    /// event loop (and the transport's lock) for more than a turn's worth of work.
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
        budget: &mut TurnBudget,
    ) -> Result<usize, virtio_queue::Error>;
    /// A host descriptor whose readiness means work for one of its queues (a TAP device's
    /// frames for virtio-net's receive queue): (descriptor, queue index).
    fn input_source(&self) -> Option<(RawFd, usize)> {
        None
    }
}

/// How much work one turn of a queue may still do. A turn is what one doorbell (or a TAP
/// device becoming readable) gets before the event loop goes back to its other descriptors and
/// to the `--timeout` deadline: a guest may queue requests faster than they are done, and
/// without a bound a single doorbell would hold the loop for as long as the guest likes.
/// Both the requests and the bytes they move count: 256 tiny requests and four long ones
/// are each about a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnBudget {
    requests: usize,
    bytes: u64,
}

impl TurnBudget {
    pub const fn new(requests: usize, bytes: u64) -> TurnBudget {
        TurnBudget { requests, bytes }
    }

    /// Nothing is left: take no other request this turn. A request is taken whole, so a turn
    /// may go over the byte budget by at most one request's bound.
    pub fn is_spent(&self) -> bool {
        self.requests == 0 || self.bytes == 0
    }

    /// One request is done, and it moved `bytes` between guest memory and the host.
    pub fn spend(&mut self, bytes: u64) {
        self.requests = self.requests.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// The most descriptors a chain may have: a virtio-blk request of seg_max (254) segments plus
/// its header and status, and far more than a network frame or an entropy request needs. A
/// longer chain (an indirect table may hold 65,535 descriptors, all naming one buffer) is
/// returned unread with used length 0: walking and mapping it would cost the VMM in
/// proportion to a length the guest chose.
pub const MAX_CHAIN_DESCRIPTORS: usize = 256;

/// Does `chain` have more than [`MAX_CHAIN_DESCRIPTORS`]? Counts no further than that.
pub fn chain_too_long(chain: &DescriptorChain<&GuestMemoryMmap>) -> bool {
    chain.clone().take(MAX_CHAIN_DESCRIPTORS + 1).count() > MAX_CHAIN_DESCRIPTORS
}

/// What a device did with one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// The used length: how many bytes the device wrote into the chain's buffers.
    pub used_len: u32,
    /// The data it moved either way (what the turn's budget counts).
    pub bytes_moved: u64,
}

impl Served {
    /// A chain returned untouched.
    pub const NOTHING: Served = Served {
        used_len: 0,
        bytes_moved: 0,
    };
}

/// The loop every device runs over a queue: takes requests off the available ring while the
/// turn's `budget` lasts, lets `serve` do each, and puts each on the used ring with the length
/// `serve` wrote. A chain of more than [`MAX_CHAIN_DESCRIPTORS`] is returned without being
/// served. Returns how many were done.
pub fn serve_requests(
    queue: &mut Queue,
    memory: &GuestMemoryMmap,
    budget: &mut TurnBudget,
    mut serve: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> Served,
) -> Result<usize, virtio_queue::Error> {
    let mut done = 0;
    while !budget.is_spent() {
        let Some(chain) = queue.pop_descriptor_chain(memory) else {
            break;
        };
        let head = chain.head_index();
        let served = if chain_too_long(&chain) {
            Served::NOTHING
        } else {
            serve(chain)
        };
        queue.add_used(memory, head, served.used_len)?;
        budget.spend(served.bytes_moved);
        done += 1;
    }
    Ok(done)
}

/// A read of a configuration space whose bytes are `config`: bytes past its end read as 0.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = usize::try_from(offset)
            .ok()
            .and_then(|offset| config.get(offset.checked_add(i)?))
            .copied()
            .unwrap_or(0);
    }
}
