//! The fuzz cases of the virtio devices: the transport's registers, and rings and buffers in
//! guest memory, driven by a random driver (virtio-rng, virtio-blk on a real image file, and
//! virtio-net on a real TAP device).

use super::*;

pub(super) const NEXT: u16 = 1;
pub(super) const WRITE: u16 = 2;
pub(super) const INDIRECT: u16 = 4;

/// The queues' rings, when the driver set them up properly: queue q's descriptors, available
/// and used rings, from 0x1000 + q * 0x4000.
pub(super) fn rings(queue: u64) -> (u64, u64, u64) {
    let base = 0x1000 + queue * 0x4000;
    (base, base + 0x1000, base + 0x2000)
}

/// A transport driven by a random driver: sometimes a correct initialisation, then random
/// register accesses, random descriptor tables, available-ring entries and buffer bytes, and
/// doorbells.
pub(super) struct VirtioCase<'a> {
    rng: &'a mut Rng,
    transport: MmioTransport,
    memory: GuestMemoryMmap,
    queue_size: u16,
    /// The available ring's index the driver has written, per queue.
    avail: [u16; 2],
}

impl VirtioCase<'_> {
    fn set(&mut self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    /// What a driver does: status, features, queues, DRIVER_OK (with random slips).
    fn initialise(&mut self) {
        self.set(0x070, 1 | 2);
        self.set(0x024, 0);
        let features = if self.rng.chance(4) {
            self.rng.next() as u32
        } else {
            u32::MAX
        };
        self.set(0x020, features);
        self.set(0x024, 1);
        self.set(0x020, 1); // VERSION_1
        self.set(0x070, 1 | 2 | 8);
        for queue in 0..2 {
            self.set(0x030, queue as u32);
            let (descriptors, avail, used) = rings(queue);
            self.set(0x038, u32::from(self.queue_size));
            self.set(0x080, descriptors as u32);
            self.set(0x090, avail as u32);
            self.set(0x0a0, used as u32);
            self.set(0x044, 1);
        }
        self.set(0x070, 1 | 2 | 8 | 4);
    }

    /// An address: mostly in the buffer area, sometimes anywhere in RAM, at its end, or beyond.
    fn address(&mut self) -> u64 {
        match self.rng.below(8) {
            0 => self.rng.value(),
            1 => VIRTIO_MEMORY - self.rng.below(0x100),
            2 => self.rng.below(VIRTIO_MEMORY),
            _ => 0x10000 + self.rng.below(0x10000),
        }
    }

    fn length(&mut self) -> u32 {
        match self.rng.below(6) {
            0 => self.rng.value() as u32,
            1 => 16,
            2 => 1,
            3 => 512 * (1 + self.rng.below(8) as u32),
            _ => self.rng.below(0x2000) as u32,
        }
    }

    /// Writes one descriptor at index `index` of the table at `table`.
    fn descriptor(&mut self, table: u64, index: u64) {
        let flags = match self.rng.below(4) {
            0 => self.rng.next() as u16,
            _ => (self.rng.below(8) as u16) & (NEXT | WRITE | INDIRECT),
        };
        let next = if self.rng.chance(8) {
            self.rng.next() as u16
        } else {
            self.rng.below(u64::from(self.queue_size)) as u16
        };
        let address = self.address();
        let length = self.length();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&address.to_le_bytes());
        bytes[8..12].copy_from_slice(&length.to_le_bytes());
        bytes[12..14].copy_from_slice(&flags.to_le_bytes());
        bytes[14..].copy_from_slice(&next.to_le_bytes());
        let _ = self
            .memory
            .write_slice(&bytes, GuestAddress(table + index * 16));
    }

    /// Makes a chain head available on `queue`: fills a few descriptors (maybe an indirect
    /// table) and request headers, then bumps the available index (sometimes wildly).
    fn offer(&mut self, queue: u64) {
        let (descriptors, avail, _) = rings(queue);
        let size = u64::from(self.queue_size).max(1);
        for _ in 0..1 + self.rng.below(6) {
            let index = self.rng.below(size);
            self.descriptor(descriptors, index);
        }
        if self.rng.chance(4) {
            // An indirect table in the buffer area.
            let table = 0x10000 + self.rng.below(0x10000) / 16 * 16;
            for index in 0..self.rng.below(8) {
                self.descriptor(table, index);
            }
        }
        if self.rng.chance(2) {
            // A block request header somewhere in the buffer area: type, reserved, sector.
            let mut header = [0u8; 16];
            header[..4].copy_from_slice(
                &([0u32, 1, 4, 8, 11, 13][self.rng.below(6) as usize]).to_le_bytes(),
            );
            let sector = if self.rng.chance(2) {
                self.rng.below(IMAGE_SIZE / 512 + 4)
            } else {
                self.rng.value()
            };
            header[8..].copy_from_slice(&sector.to_le_bytes());
            let at = 0x10000 + self.rng.below(0x10000);
            let _ = self.memory.write_slice(&header, GuestAddress(at));
        }
        let q = queue as usize;
        let slot = u64::from(self.avail[q]) % size;
        let head = self.rng.below(size) as u16;
        let _ = self
            .memory
            .write_obj(head, GuestAddress(avail + 4 + slot * 2));
        self.avail[q] = if self.rng.chance(16) {
            self.rng.next() as u16
        } else {
            self.avail[q].wrapping_add(1)
        };
        let flags = if self.rng.chance(8) {
            self.rng.next() as u16
        } else {
            0
        };
        let _ = self.memory.write_obj(flags, GuestAddress(avail));
        let _ = self
            .memory
            .write_obj(self.avail[q], GuestAddress(avail + 2));
    }

    /// The case: `operations` random steps.
    fn drive(&mut self, operations: u64) -> u64 {
        if !self.rng.chance(8) {
            self.initialise();
        }
        for _ in 0..operations {
            match self.rng.below(10) {
                0..=2 => poke(self.rng, &mut self.transport, 0x200),
                3..=5 => {
                    let queue = self.rng.below(2);
                    self.offer(queue);
                }
                6 => {
                    let at = self.address();
                    let len = self.rng.below(64) as usize;
                    let bytes = self.rng.bytes(len);
                    let _ = self.memory.write_slice(&bytes, GuestAddress(at));
                }
                _ => {
                    // The doorbell, as the event loop rings it: turns until done (bounded).
                    let queue = if self.rng.chance(8) {
                        self.rng.below(4)
                    } else {
                        self.rng.below(2)
                    };
                    for _ in 0..64 {
                        if self.transport.notify(queue as usize) == Notified::Done {
                            break;
                        }
                    }
                }
            }
        }
        operations
    }
}

pub(super) fn virtio_case(rng: &mut Rng, device: Box<dyn VirtioDevice>) -> u64 {
    let memory =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), VIRTIO_MEMORY as usize)]).unwrap();
    let transport = MmioTransport::new(device, 0, memory.clone(), IrqLine::disconnected(5));
    let queue_size = [256u16, 256, 16, 1, 2, 0, 512, 3][rng.below(8) as usize];
    let mut case = VirtioCase {
        rng,
        transport,
        memory,
        queue_size,
        avail: [0; 2],
    };
    let done = case.drive(100);
    // How many requests the device completed: the used rings' indexes (where the driver put
    // them). A harness whose requests never get through tests only the front door.
    for queue in 0..2 {
        let (_, _, used) = rings(queue);
        let index: u16 = case.memory.read_obj(GuestAddress(used + 2)).unwrap();
        COMPLETED.fetch_add(u64::from(index), Ordering::Relaxed);
    }
    done
}

/// Requests virtio devices completed, over all cases (a figure, and a check of the harness).
pub(super) static COMPLETED: AtomicU64 = AtomicU64::new(0);

pub(super) fn rng_case(rng: &mut Rng) -> u64 {
    virtio_case(rng, Box::new(crate::devices::virtio::rng::Rng::new()))
}

/// A fresh temporary image of [`IMAGE_SIZE`] bytes, sometimes read-only; after the case its
/// length must be unchanged: nothing was written past its end.
pub(super) fn block_case(rng: &mut Rng) -> u64 {
    let file = tempfile_image();
    let read_only = rng.chance(4);
    let block = Block::new(file.try_clone().unwrap(), IMAGE_SIZE, read_only, "fuzz.img");
    let done = virtio_case(rng, Box::new(block));
    let length = file.metadata().unwrap().len();
    assert_eq!(
        length, IMAGE_SIZE,
        "the image grew (or shrank) to {length} bytes"
    );
    done
}

/// A temporary file of IMAGE_SIZE bytes, unlinked at once (it goes when closed).
pub(super) fn tempfile_image() -> File {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "mini-kvm-fuzz-{}-{}.img",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file.set_len(IMAGE_SIZE).unwrap();
    file
}

/// virtio-net on a real TAP device, in a network namespace of a thread of its own (as
/// virtio/tests.rs does): frames the guest transmits leave through it; a host socket sends
/// frames back now and then, for the receive queue. Needs root.
pub(super) fn net_run(cases: u64) -> Figures {
    use crate::devices::virtio::net::{HEADER_SIZE, Net};
    use crate::devices::virtio::tap::Tap;
    use crate::devices::virtio::tests::{bring_up, packet_socket};
    std::thread::spawn(move || {
        // SAFETY: unshare(2) moves only this thread into a new network namespace.
        let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            unshared,
            0,
            "this test needs root, for a network namespace and a TAP device: {}",
            std::io::Error::last_os_error()
        );
        run("virtio-net", 0x6e6574, cases, |rng| {
            // A fresh TAP device per case (it goes when the case's Net closes it), up, with a
            // host socket on it.
            let tap = Tap::open("mkvmfz0", HEADER_SIZE).unwrap();
            bring_up("mkvmfz0");
            let socket = packet_socket("mkvmfz0");
            let host = std::os::fd::AsRawFd::as_raw_fd(&socket);
            let frames = rng.below(4);
            for _ in 0..frames {
                let len = 14 + rng.below(1500) as usize;
                let mut frame = rng.bytes(len);
                frame[..6].fill(0xff);
                // SAFETY: send from `frame`, its length.
                unsafe { libc::send(host, frame.as_ptr().cast(), frame.len(), 0) };
            }
            virtio_case(
                rng,
                Box::new(Net::new(tap, [0x52, 0x54, 0, 0x12, 0x34, 0x56])),
            )
        })
    })
    .join()
    .unwrap()
}
