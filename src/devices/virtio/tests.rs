//! The transport and the devices driven the way a guest's driver drives them: registers written
//! through the bus interface, rings and buffers laid out in guest memory by hand.

use std::io::{Read, Seek, SeekFrom, Write};

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::block::Block;
use super::mmio::{EmptySlot, MmioTransport, Notified};
use super::rng::Rng;
use super::*;
use crate::devices::{BusDevice, IrqLine};

const QUEUE_SIZE: u16 = 8;
const DESCRIPTORS: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
/// Where the test's buffers go.
const BUFFERS: u64 = 0x10000;
const NEXT: u16 = 1;
const WRITE: u16 = 2;

/// A driver that sets up queue 0 and submits chains.
struct Driver {
    transport: MmioTransport,
    memory: GuestMemoryMmap,
    submitted: u16,
}

impl Driver {
    fn new(device: Box<dyn VirtioDevice>, accept: u64) -> Driver {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let transport = MmioTransport::new(device, 0, memory.clone(), IrqLine::disconnected(5));
        let mut driver = Driver {
            transport,
            memory,
            submitted: 0,
        };
        driver.set(0x070, 1 | 2); // ACKNOWLEDGE | DRIVER
        driver.set(0x024, 0);
        driver.set(0x020, accept as u32);
        driver.set(0x024, 1);
        driver.set(0x020, (accept >> 32) as u32);
        driver.set(0x070, 1 | 2 | 8); // FEATURES_OK
        driver
    }

    /// Brings queue 0 up and sets DRIVER_OK.
    fn ready(mut self) -> Driver {
        assert_eq!(self.get(0x070) & 8, 8, "FEATURES_OK stuck");
        self.set(0x030, 0);
        assert_eq!(self.get(0x034), 256, "QueueNumMax");
        self.set(0x038, u32::from(QUEUE_SIZE));
        self.set(0x080, DESCRIPTORS as u32);
        self.set(0x090, AVAIL as u32);
        self.set(0x0a0, USED as u32);
        self.set(0x044, 1);
        self.set(0x070, 1 | 2 | 8 | 4);
        self
    }

    fn get(&mut self, offset: u64) -> u32 {
        let mut word = [0u8; 4];
        self.transport.read(offset, &mut word);
        u32::from_le_bytes(word)
    }

    fn set(&mut self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    /// Puts a chain of (address, length, device-writable) buffers on the available ring,
    /// rings the doorbell, and returns the used element's length.
    fn submit(&mut self, buffers: &[(u64, u32, bool)]) -> u32 {
        for (i, &(address, len, writable)) in buffers.iter().enumerate() {
            let mut flags = if writable { WRITE } else { 0 };
            if i + 1 < buffers.len() {
                flags |= NEXT;
            }
            let at = GuestAddress(DESCRIPTORS + 16 * i as u64);
            self.memory.write_obj(address, at).unwrap();
            self.memory.write_obj(len, at.unchecked_add(8)).unwrap();
            self.memory.write_obj(flags, at.unchecked_add(12)).unwrap();
            self.memory
                .write_obj((i + 1) as u16, at.unchecked_add(14))
                .unwrap();
        }
        let slot = u64::from(self.submitted % QUEUE_SIZE);
        self.memory
            .write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
        self.submitted = self.submitted.wrapping_add(1);
        self.memory
            .write_obj(self.submitted, GuestAddress(AVAIL + 2))
            .unwrap();
        assert_eq!(self.transport.notify(0), Notified::Done);
        let used_index: u16 = self.memory.read_obj(GuestAddress(USED + 2)).unwrap();
        assert_eq!(used_index, self.submitted, "the request was used");
        assert_eq!(self.get(0x060), 1, "InterruptStatus: the used ring moved");
        self.set(0x064, 1);
        let element = USED + 4 + 8 * ((u64::from(self.submitted) - 1) % u64::from(QUEUE_SIZE));
        let id: u32 = self.memory.read_obj(GuestAddress(element)).unwrap();
        assert_eq!(id, 0, "the chain's head");
        self.memory.read_obj(GuestAddress(element + 4)).unwrap()
    }

    /// A block request: header, data, status. Returns (status byte, used length).
    fn block(&mut self, kind: u32, sector: u64, data: Option<(u32, bool)>) -> (u8, u32) {
        let header = BUFFERS;
        self.memory.write_obj(kind, GuestAddress(header)).unwrap();
        self.memory
            .write_obj(0u32, GuestAddress(header + 4))
            .unwrap();
        self.memory
            .write_obj(sector, GuestAddress(header + 8))
            .unwrap();
        let status = BUFFERS + 0x100;
        self.memory.write_obj(0xffu8, GuestAddress(status)).unwrap();
        let mut chain = vec![(header, 16, false)];
        if let Some((len, writable)) = data {
            chain.push((BUFFERS + 0x1000, len, writable));
        }
        chain.push((status, 1, true));
        let used = self.submit(&chain);
        (self.memory.read_obj(GuestAddress(status)).unwrap(), used)
    }
}

fn disk(bytes: &[u8], read_only: bool) -> (Block, std::fs::File) {
    let mut file = tempfile();
    file.write_all(bytes).unwrap();
    let copy = file.try_clone().unwrap();
    (
        Block::new(file, bytes.len() as u64, read_only, "test.img"),
        copy,
    )
}

/// An unnamed file in the temporary directory (gone when closed).
fn tempfile() -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(std::env::temp_dir())
        .unwrap()
}

const VERSION_1_AND_FLUSH: u64 = FEATURE_VERSION_1 | 1 << 9;

#[test]
fn an_empty_slot_says_virt_version_2_and_device_0() {
    let mut slot = EmptySlot;
    let mut word = [0u8; 4];
    for (offset, value) in [(0, 0x7472_6976), (4, 2), (8, 0)] {
        slot.read(offset, &mut word);
        assert_eq!(u32::from_le_bytes(word), value, "offset {offset}");
    }
}

#[test]
fn features_ok_sticks_only_with_version_1_and_offered_bits() {
    let (block, _) = disk(&[0; 1024], false);
    let mut legacy = Driver::new(Box::new(block), 1 << 9);
    assert_eq!(
        legacy.get(0x070),
        1 | 2,
        "FEATURES_OK refused without VERSION_1"
    );
    let (block, _) = disk(&[0; 1024], false);
    let mut greedy = Driver::new(Box::new(block), VERSION_1_AND_FLUSH | 1 << 5);
    assert_eq!(
        greedy.get(0x070),
        1 | 2,
        "FEATURES_OK refused: RO was not offered"
    );
    let (block, _) = disk(&[0; 1024], false);
    let mut good = Driver::new(Box::new(block), VERSION_1_AND_FLUSH);
    assert_eq!(good.get(0x070), 1 | 2 | 8);
    assert_eq!(good.get(0x008), 2, "DeviceID: block");
    good.set(0x014, 1);
    assert_eq!(good.get(0x010), 1, "the high feature word: VERSION_1");
    // The capacity, in sectors, at 0x100.
    assert_eq!(good.get(0x100), 2);
    good.set(0x070, 0);
    assert_eq!(good.get(0x070), 0, "reset");
}

#[test]
fn a_disk_reads_writes_flushes_and_names_itself() {
    let mut image: Vec<u8> = (0..2048u32).map(|i| (i / 512) as u8 + 1).collect();
    let (block, mut file) = disk(&image, false);
    let mut driver = Driver::new(Box::new(block), VERSION_1_AND_FLUSH).ready();

    // Read sectors 1-2: 1024 bytes of 2s and 3s, used length = data + status byte.
    assert_eq!(driver.block(0, 1, Some((1024, true))), (0, 1025));
    let mut read = vec![0u8; 1024];
    driver
        .memory
        .read_slice(&mut read, GuestAddress(BUFFERS + 0x1000))
        .unwrap();
    assert_eq!(read, image[512..1536]);

    // Write sector 3 from guest memory: it is in the file.
    driver
        .memory
        .write_slice(&[0xab; 512], GuestAddress(BUFFERS + 0x1000))
        .unwrap();
    assert_eq!(driver.block(1, 3, Some((512, false))), (0, 1));
    image[1536..].fill(0xab);
    let mut on_disk = Vec::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut on_disk).unwrap();
    assert_eq!(on_disk, image);

    assert_eq!(driver.block(4, 0, None), (0, 1), "flush");
    // GET_ID: the image's name, NUL-padded to 20 bytes.
    assert_eq!(driver.block(8, 0, Some((20, true))), (0, 21));
    let mut id = [0u8; 20];
    driver
        .memory
        .read_slice(&mut id, GuestAddress(BUFFERS + 0x1000))
        .unwrap();
    assert_eq!(&id, b"test.img\0\0\0\0\0\0\0\0\0\0\0\0");
}

#[test]
fn bad_requests_get_an_error_status_and_never_touch_the_file() {
    let image = vec![7u8; 2048];
    let (block, mut file) = disk(&image, false);
    let mut driver = Driver::new(Box::new(block), VERSION_1_AND_FLUSH).ready();
    // Past the end: sectors 3-4 of a 4-sector disk; and a sector number that would overflow.
    assert_eq!(driver.block(0, 3, Some((1024, true))), (1, 1));
    assert_eq!(driver.block(1, 3, Some((1024, false))), (1, 1));
    assert_eq!(driver.block(1, u64::MAX, Some((512, false))), (1, 1));
    // Not whole sectors.
    assert_eq!(driver.block(0, 0, Some((100, true))), (1, 1));
    // An unknown request type.
    assert_eq!(driver.block(99, 0, None), (2, 1), "UNSUPP");
    // A chain without a writable byte for the status: returned with nothing written.
    assert_eq!(driver.submit(&[(BUFFERS, 16, false)]), 0);
    // A buffer outside guest RAM.
    assert_eq!(
        driver.submit(&[(BUFFERS, 16, false), (0x4000_0000, 512, true)]),
        0
    );
    let mut on_disk = Vec::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut on_disk).unwrap();
    assert_eq!(on_disk, image);
}

#[test]
fn a_read_only_disk_refuses_writes() {
    let (block, mut file) = disk(&[5u8; 1024], true);
    let features = VERSION_1_AND_FLUSH | 1 << 5;
    let mut driver = Driver::new(Box::new(block), features).ready();
    assert_eq!(driver.block(1, 0, Some((512, false))), (1, 1), "IOERR");
    assert_eq!(driver.block(0, 0, Some((512, true))), (0, 513));
    let mut on_disk = Vec::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut on_disk).unwrap();
    assert_eq!(on_disk, vec![5u8; 1024]);
}

#[test]
fn requests_before_driver_ok_wait() {
    let (block, _) = disk(&[0; 1024], false);
    let mut driver = Driver::new(Box::new(block), VERSION_1_AND_FLUSH);
    assert_eq!(driver.transport.notify(0), Notified::Done);
    assert_eq!(driver.get(0x060), 0, "no interrupt");
}

#[test]
fn the_entropy_device_fills_buffers() {
    let mut driver = Driver::new(Box::new(Rng::new()), FEATURE_VERSION_1).ready();
    assert_eq!(driver.get(0x008), 4, "DeviceID: entropy");
    driver
        .memory
        .write_slice(&[0u8; 64], GuestAddress(BUFFERS))
        .unwrap();
    assert_eq!(driver.submit(&[(BUFFERS, 64, true)]), 64);
    let mut bytes = [0u8; 64];
    driver
        .memory
        .read_slice(&mut bytes, GuestAddress(BUFFERS))
        .unwrap();
    // 64 random bytes are all zero with probability 2^-512.
    assert_ne!(bytes, [0u8; 64]);
    // A read-only buffer gets nothing.
    assert_eq!(driver.submit(&[(BUFFERS, 64, false)]), 0);
}
