//! virtio-net (virtio 1.2 §5.1): a network card whose cable is a TAP device on the host.
//!
//! Two queues: the driver fills the *receive* queue (0) with empty buffers and puts frames to
//! send on the *transmit* queue (1). Every frame in either direction starts with the 12-byte
//! virtio-net header (`struct virtio_net_hdr_v1`); the TAP device uses the same header
//! (tap.rs), so a frame is copied through unchanged:
//!
//! - transmit: the driver rings queue 1's doorbell; each chain is read into a buffer and
//!   written to the TAP device (a full TAP queue drops the frame, as a busy wire would);
//! - receive: when the TAP device has frames (its descriptor is readable) or the driver has just
//!   given buffers (queue 0's doorbell), frames are read from the TAP device into the buffers.
//!   With no buffer left the device stops reading, and the host's interface queues (and then
//!   drops) what comes: back-pressure, not buffering in mini-kvm. At most one frame waits here.
//!
//! Features: VERSION_1 and MAC (the configuration holds a MAC address). No checksum or
//! segmentation offloads: frames are at most 1514 bytes plus the header, and the guest computes
//! its own checksums.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::tap::Tap;
use super::{
    DEVICE_ID_NET, FEATURE_VERSION_1, Served, TurnBudget, VirtioDevice, chain_too_long,
    read_config_bytes, serve_requests,
};

/// The virtio-net header in front of every frame: flags, GSO type, header length, GSO size,
/// checksum start and offset, and the number of buffers a received frame took (always 1 here).
pub const HEADER_SIZE: usize = 12;
const NUM_BUFFERS_AT: usize = 10;
/// The largest frame with its header that goes through: a full 64 KiB IP packet, which only
/// a guest with offloads would send. A frame read into the buffer is never longer.
const MAX_FRAME: usize = HEADER_SIZE + 65536;

pub const RECEIVE_QUEUE: usize = 0;
pub const TRANSMIT_QUEUE: usize = 1;

pub struct Net {
    tap: Tap,
    mac: [u8; 6],
    /// A frame read from the TAP device that no receive buffer has taken yet (`pending` bytes).
    received: Vec<u8>,
    pending: usize,
    sent: Vec<u8>,
}

impl Net {
    pub fn new(tap: Tap, mac: [u8; 6]) -> Net {
        Net {
            tap,
            mac,
            received: vec![0; MAX_FRAME],
            pending: 0,
            sent: vec![0; MAX_FRAME],
        }
    }

    /// Moves frames from the TAP device into receive buffers until either runs out, or the
    /// turn's budget does (a host that sends as fast as the guest gives buffers must not keep
    /// the event loop here).
    fn receive(
        &mut self,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
        budget: &mut TurnBudget,
    ) -> Result<usize, virtio_queue::Error> {
        let mut done = 0;
        while !budget.is_spent() {
            if self.pending == 0 {
                match self.tap.receive(&mut self.received) {
                    Ok(0) => break,
                    Ok(length) => self.pending = length,
                    // WouldBlock: nothing more for now; anything else: the interface is gone.
                    Err(_) => break,
                }
                // One buffer per frame: say so in the header, as a driver that did not
                // negotiate MRG_RXBUF expects.
                if self.pending >= HEADER_SIZE {
                    self.received[NUM_BUFFERS_AT..HEADER_SIZE].copy_from_slice(&1u16.to_le_bytes());
                }
            }
            let Some(chain) = queue.pop_descriptor_chain(memory) else {
                // No buffer: the frame waits here, and the driver's next doorbell resumes.
                break;
            };
            let head = chain.head_index();
            let frame = &self.received[..self.pending];
            let writer = match chain_too_long(&chain) {
                true => None,
                false => chain.writer(memory).ok(),
            };
            let written = match writer {
                // A buffer too small for the frame (or a chain too long to look at): the frame
                // is dropped, the buffer returned.
                Some(mut writer) if writer.available_bytes() >= frame.len() => {
                    writer.write_all(frame).map_or(0, |()| frame.len())
                }
                _ => 0,
            };
            self.pending = 0;
            queue.add_used(memory, head, written as u32)?;
            budget.spend(written as u64);
            done += 1;
        }
        Ok(done)
    }

    /// Sends every frame on the transmit queue to the TAP device.
    fn transmit(
        &mut self,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
        budget: &mut TurnBudget,
    ) -> Result<usize, virtio_queue::Error> {
        serve_requests(queue, memory, budget, |chain| {
            let mut sent = 0;
            if let Ok(mut reader) = chain.reader(memory) {
                let length = reader.available_bytes();
                // Frames larger than any the device accepts, or shorter than the header, are
                // dropped; so is a frame the TAP device has no room for.
                if (HEADER_SIZE..=MAX_FRAME).contains(&length) {
                    let frame = &mut self.sent[..length];
                    if reader.read_exact(frame).is_ok() {
                        let _ = self.tap.send(frame);
                        sent = length;
                    }
                }
            }
            Served {
                used_len: 0, // the device writes nothing into a transmitted frame's buffers
                bytes_moved: sent as u64,
            }
        })
    }
}

impl VirtioDevice for Net {
    fn name(&self) -> &'static str {
        "virtio-net"
    }

    fn device_id(&self) -> u32 {
        DEVICE_ID_NET
    }

    fn features(&self) -> u64 {
        FEATURE_VERSION_1 | 1 << VIRTIO_NET_F_MAC
    }

    fn queue_sizes(&self) -> &'static [u16] {
        &[256, 256]
    }

    /// The configuration: the MAC address (struct virtio_net_config's first field; the others
    /// belong to features not offered).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.mac, offset, data);
    }

    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
        budget: &mut TurnBudget,
    ) -> Result<usize, virtio_queue::Error> {
        match index {
            RECEIVE_QUEUE => self.receive(queue, memory, budget),
            TRANSMIT_QUEUE => self.transmit(queue, memory, budget),
            _ => Ok(0),
        }
    }

    /// The TAP device's descriptor: readable means frames for the receive queue.
    fn input_source(&self) -> Option<(RawFd, usize)> {
        Some((self.tap.as_raw_fd(), RECEIVE_QUEUE))
    }
}

/// A MAC address for the guest's card: locally administered (bit 1 of the first byte), unicast,
/// the rest from the host's random bytes, so that two guests on one bridge differ.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom writes at most 6 bytes into `mac`.
    let got = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    if got != mac.len() as isize {
        mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}
