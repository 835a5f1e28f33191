//! The transport and the devices driven the way a guest's driver drives them: registers written
//! through the bus interface, rings and buffers laid out in guest memory by hand.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::block::Block;
use super::mmio::{EmptySlot, MmioTransport, Notified};
use super::rng::Rng;
use super::*;
use crate::devices::{BusDevice, IrqLine};

/// The queue size the driver sets: the device's largest, so that a test can fill a turn.
pub(crate) const QUEUE_SIZE: u16 = 256;
/// The guest's RAM: room for requests of a few MiB.
const MEMORY_SIZE: usize = 0x80_0000;
/// Queue q's rings: descriptors, available and used, a page each, from here + q * 0x4000.
const RINGS: u64 = 0x1000;
/// Where the test's buffers go.
pub(crate) const BUFFERS: u64 = 0x10000;
const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;
/// A chain offered by [`Driver::offer`] uses at most this many descriptors; QUEUE_SIZE /
/// CHAIN_MAX chains may wait on a queue at once.
const CHAIN_MAX: u16 = 4;
const CHAINS: u16 = QUEUE_SIZE / CHAIN_MAX;

fn rings(queue: usize) -> (u64, u64, u64) {
    let base = RINGS + queue as u64 * 0x4000;
    (base, base + 0x1000, base + 0x2000)
}

/// A driver that sets up the device's queues and submits chains. The transport is shared, as
/// the VMM shares it between the bus and the event loop's handlers (vmm/virtio.rs).
pub(crate) struct Driver {
    pub(crate) transport: Arc<Mutex<MmioTransport>>,
    pub(crate) memory: GuestMemoryMmap,
    /// Chains made available, per queue.
    offered: [u16; 2],
    /// Used elements already looked at, per queue.
    seen: [u16; 2],
}

impl Driver {
    pub(crate) fn new(device: Box<dyn VirtioDevice>, accept: u64) -> Driver {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY_SIZE)]).unwrap();
        let transport = Arc::new(Mutex::new(MmioTransport::new(
            device,
            0,
            memory.clone(),
            IrqLine::disconnected(5),
        )));
        let mut driver = Driver {
            transport,
            memory,
            offered: [0; 2],
            seen: [0; 2],
        };
        driver.set(0x070, 1 | 2); // ACKNOWLEDGE | DRIVER
        driver.set(0x024, 0);
        driver.set(0x020, accept as u32);
        driver.set(0x024, 1);
        driver.set(0x020, (accept >> 32) as u32);
        driver.set(0x070, 1 | 2 | 8); // FEATURES_OK
        driver
    }

    /// Brings every queue up and sets DRIVER_OK.
    pub(crate) fn ready(mut self) -> Driver {
        assert_eq!(self.get(0x070) & 8, 8, "FEATURES_OK stuck");
        for queue in 0..2 {
            self.set(0x030, queue as u32);
            if self.get(0x034) == 0 {
                break; // no such queue
            }
            assert_eq!(self.get(0x034), 256, "QueueNumMax");
            let (descriptors, avail, used) = rings(queue);
            self.set(0x038, u32::from(QUEUE_SIZE));
            self.set(0x080, descriptors as u32);
            self.set(0x090, avail as u32);
            self.set(0x0a0, used as u32);
            self.set(0x044, 1);
        }
        self.set(0x070, 1 | 2 | 8 | 4);
        self
    }

    pub(crate) fn transport(&self) -> MutexGuard<'_, MmioTransport> {
        self.transport.lock().unwrap()
    }

    /// The doorbell of `queue`, as the event loop rings it: one turn.
    pub(crate) fn notify(&self, queue: usize) -> Notified {
        self.transport().notify(queue)
    }

    pub(crate) fn get(&mut self, offset: u64) -> u32 {
        let mut word = [0u8; 4];
        self.transport().read(offset, &mut word);
        u32::from_le_bytes(word)
    }

    pub(crate) fn set(&mut self, offset: u64, value: u32) {
        self.transport().write(offset, &value.to_le_bytes());
    }

    /// Puts a chain of (address, length, device-writable) buffers on queue `queue`'s available
    /// ring, without ringing the doorbell.
    pub(crate) fn offer(&mut self, queue: usize, buffers: &[(u64, u32, bool)]) {
        let (descriptors, _, _) = rings(queue);
        let head = (self.offered[queue] % CHAINS) * CHAIN_MAX;
        write_descriptors(&self.memory, descriptors, head, buffers);
        self.make_available(queue, head);
    }

    /// `count` chains of one device-writable buffer each (`len` bytes at `address`), in
    /// descriptors 0.. (all of the queue's, at most): a driver's receive buffers.
    pub(crate) fn offer_single_buffers(
        &mut self,
        queue: usize,
        count: u16,
        address: u64,
        len: u32,
    ) {
        let (descriptors, _, _) = rings(queue);
        for head in 0..count {
            write_descriptors(&self.memory, descriptors, head, &[(address, len, true)]);
            self.make_available(queue, head);
        }
    }

    /// A chain whose head is one descriptor pointing to an indirect table at `table`, which
    /// holds `buffers`.
    fn offer_indirect(&mut self, queue: usize, table: u64, buffers: &[(u64, u32, bool)]) {
        let (descriptors, _, _) = rings(queue);
        write_descriptors(&self.memory, table, 0, buffers);
        let head = (self.offered[queue] % CHAINS) * CHAIN_MAX;
        let at = GuestAddress(descriptors + 16 * u64::from(head));
        let table_len = 16 * buffers.len() as u32;
        self.memory.write_obj(table, at).unwrap();
        self.memory
            .write_obj(table_len, at.unchecked_add(8))
            .unwrap();
        self.memory
            .write_obj(INDIRECT, at.unchecked_add(12))
            .unwrap();
        self.make_available(queue, head);
    }

    /// Puts the chain at `head` on the available ring.
    fn make_available(&mut self, queue: usize, head: u16) {
        let (_, avail, _) = rings(queue);
        let slot = u64::from(self.offered[queue] % QUEUE_SIZE);
        self.memory
            .write_obj(head, GuestAddress(avail + 4 + 2 * slot))
            .unwrap();
        self.offered[queue] = self.offered[queue].wrapping_add(1);
        self.memory
            .write_obj(self.offered[queue], GuestAddress(avail + 2))
            .unwrap();
    }

    /// The next used element of `queue` (head, length), if the device has put one there.
    pub(crate) fn take_used(&mut self, queue: usize) -> Option<(u32, u32)> {
        let (_, _, used) = rings(queue);
        let used_index: u16 = self.memory.read_obj(GuestAddress(used + 2)).unwrap();
        if used_index == self.seen[queue] {
            return None;
        }
        let element = used + 4 + 8 * u64::from(self.seen[queue] % QUEUE_SIZE);
        self.seen[queue] = self.seen[queue].wrapping_add(1);
        let id: u32 = self.memory.read_obj(GuestAddress(element)).unwrap();
        let len: u32 = self.memory.read_obj(GuestAddress(element + 4)).unwrap();
        Some((id, len))
    }

    /// Offers a chain on queue 0, rings the doorbell, and returns the used element's length.
    fn submit(&mut self, buffers: &[(u64, u32, bool)]) -> u32 {
        self.submit_to(0, buffers)
    }

    fn submit_to(&mut self, queue: usize, buffers: &[(u64, u32, bool)]) -> u32 {
        self.offer(queue, buffers);
        assert_eq!(self.notify(queue), Notified::Done);
        assert_eq!(self.get(0x060), 1, "InterruptStatus: the used ring moved");
        self.set(0x064, 1);
        let (head, len) = self.take_used(queue).expect("the request was used");
        assert_eq!(
            head,
            u32::from((self.offered[queue].wrapping_sub(1) % CHAINS) * CHAIN_MAX),
            "the chain's head"
        );
        assert_eq!(self.take_used(queue), None, "one request, one used element");
        len
    }

    /// A block request: header, data, status. Returns (status byte, used length).
    fn block(&mut self, kind: u32, sector: u64, data: Option<(u32, bool)>) -> (u8, u32) {
        let chain = self.block_chain(kind, sector, data);
        let used = self.submit(&chain);
        (self.memory.read_obj(GuestAddress(STATUS)).unwrap(), used)
    }

    /// Writes a block request's header (at BUFFERS) and a status byte of 0xff (at STATUS), and
    /// returns its chain: header, the data at DATA if any, status.
    fn block_chain(
        &mut self,
        kind: u32,
        sector: u64,
        data: Option<(u32, bool)>,
    ) -> Vec<(u64, u32, bool)> {
        let header = BUFFERS;
        self.memory.write_obj(kind, GuestAddress(header)).unwrap();
        self.memory
            .write_obj(0u32, GuestAddress(header + 4))
            .unwrap();
        self.memory
            .write_obj(sector, GuestAddress(header + 8))
            .unwrap();
        self.memory.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let mut chain = vec![(header, 16, false)];
        if let Some((len, writable)) = data {
            chain.push((DATA, len, writable));
        }
        chain.push((STATUS, 1, true));
        chain
    }
}

/// A block request's status byte, and its data.
const STATUS: u64 = BUFFERS + 0x100;
const DATA: u64 = BUFFERS + 0x1000;

/// Writes descriptors for `buffers` (address, length, device-writable) into the table at
/// `table` from index `first` on, each chained to the next.
fn write_descriptors(
    memory: &GuestMemoryMmap,
    table: u64,
    first: u16,
    buffers: &[(u64, u32, bool)],
) {
    for (i, &(address, len, writable)) in buffers.iter().enumerate() {
        let mut flags = if writable { WRITE } else { 0 };
        if i + 1 < buffers.len() {
            flags |= NEXT;
        }
        let descriptor = GuestAddress(table + 16 * (u64::from(first) + i as u64));
        memory.write_obj(address, descriptor).unwrap();
        memory.write_obj(len, descriptor.unchecked_add(8)).unwrap();
        memory
            .write_obj(flags, descriptor.unchecked_add(12))
            .unwrap();
        let next = first.wrapping_add(i as u16 + 1);
        memory
            .write_obj(next, descriptor.unchecked_add(14))
            .unwrap();
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

    // The capacity, in sectors, at 0x100; size_max (a page) and seg_max (254) after it, which
    // the offered features announce.
    assert_eq!(good.get(0x100), 2);
    assert_eq!(
        good.get(0x010),
        1 << 9 | 1 << 1 | 1 << 2,
        "FLUSH, SIZE_MAX, SEG_MAX"
    );
    assert_eq!((good.get(0x108), good.get(0x10c)), (4096, 254));
    good.set(0x014, 1);
    assert_eq!(good.get(0x010), 1, "the high feature word: VERSION_1");
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
        .read_slice(&mut read, GuestAddress(DATA))
        .unwrap();
    assert_eq!(read, image[512..1536]);

    // Write sector 3 from guest memory: it is in the file.
    driver
        .memory
        .write_slice(&[0xab; 512], GuestAddress(DATA))
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
        .read_slice(&mut id, GuestAddress(DATA))
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

const MIB: u32 = 1 << 20;

/// A sparse disk of `size` bytes whose first `marked` bytes are 0x5a.
fn marked_disk(size: u64, marked: usize) -> (Block, std::fs::File) {
    let mut file = tempfile();
    file.set_len(size).unwrap();
    file.write_all(&vec![0x5a; marked]).unwrap();
    let copy = file.try_clone().unwrap();
    (Block::new(file, size, false, "big.img"), copy)
}

fn guest_bytes(driver: &Driver, at: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    driver
        .memory
        .read_slice(&mut bytes, GuestAddress(at))
        .unwrap();
    bytes
}

/// One request may move at most 1 MiB (what the device's seg_max and size_max let a driver
/// send): one sector more is refused whole, before any byte moves either way.
#[test]
fn a_request_longer_than_a_mebibyte_gets_ioerr_and_moves_nothing() {
    let over = (MIB + 512) as usize;
    let (block, mut file) = marked_disk(4 * u64::from(MIB), over);
    let mut driver = Driver::new(Box::new(block), VERSION_1_AND_FLUSH).ready();
    driver
        .memory
        .write_slice(&vec![0xcc; over], GuestAddress(DATA))
        .unwrap();
    assert_eq!(
        driver.block(0, 0, Some((MIB + 512, true))),
        (1, 1),
        "read: IOERR"
    );
    assert_eq!(guest_bytes(&driver, DATA, over), vec![0xcc; over]);
    assert_eq!(
        driver.block(1, 0, Some((MIB + 512, false))),
        (1, 1),
        "write: IOERR"
    );
    let mut on_disk = vec![0u8; over];
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_exact(&mut on_disk).unwrap();
    assert_eq!(on_disk, vec![0x5a; over]);
    // 1 MiB exactly is a request like any other.
    assert_eq!(driver.block(0, 0, Some((MIB, true))), (0, MIB + 1));
    let mut expected = vec![0x5a; MIB as usize];
    expected.extend_from_slice(&[0xcc; 512]);
    assert_eq!(guest_bytes(&driver, DATA, over), expected);
}

/// An indirect table that names one 512-byte buffer 65,533 times (a 32 MiB read from one
/// descriptor's worth of memory) is refused: a chain of more than 256 descriptors is no
/// request a driver that read seg_max (254) sends. It is returned with used length 0, and
/// neither the buffer nor the status byte is touched. 256 descriptors are served.
#[test]
fn an_indirect_table_repeating_one_buffer_is_refused() {
    const TABLE: u64 = 0x20_0000;
    let (block, _) = marked_disk(64 * u64::from(MIB), 0);
    let mut driver = Driver::new(Box::new(block), VERSION_1_AND_FLUSH).ready();
    let request = |driver: &mut Driver, buffers: usize| {
        let header_and_status = driver.block_chain(0, 0, None);
        let mut chain = vec![header_and_status[0]];
        chain.extend(std::iter::repeat_n((DATA, 512, true), buffers));
        chain.push(header_and_status[1]);
        driver
            .memory
            .write_slice(&[0xcc; 512], GuestAddress(DATA))
            .unwrap();
        driver.offer_indirect(0, TABLE, &chain);
        assert_eq!(driver.notify(0), Notified::Done);
        let (_, used) = driver.take_used(0).expect("the chain was used");
        let status: u8 = driver.memory.read_obj(GuestAddress(STATUS)).unwrap();
        let untouched = guest_bytes(driver, DATA, 512) == [0xcc; 512];
        (used, status, untouched)
    };
    assert_eq!(request(&mut driver, 65_533), (0, 0xff, true));
    assert_eq!(
        request(&mut driver, 255),
        (0, 0xff, true),
        "257 descriptors"
    );
    // The disk's sectors are zeros: read into the buffer 254 times over.
    assert_eq!(
        request(&mut driver, 254),
        (254 * 512 + 1, 0, false),
        "256 descriptors"
    );
}

/// Eight requests of 1 MiB on one doorbell: a turn stops once it has moved 4 MiB and says
/// there is more, so that the event loop sees its other descriptors and the --timeout
/// deadline in between; the next turn does the rest.
#[test]
fn a_doorbell_with_many_long_requests_moves_four_mebibytes_a_turn() {
    let (block, _) = marked_disk(u64::from(MIB), MIB as usize);
    let mut driver = Driver::new(Box::new(block), VERSION_1_AND_FLUSH).ready();
    for _ in 0..8 {
        let chain = driver.block_chain(0, 0, Some((MIB, true)));
        driver.offer(0, &chain);
    }
    let turn = |driver: &mut Driver| {
        let notified = driver.notify(0);
        let used: Vec<(u32, u32)> = std::iter::from_fn(|| driver.take_used(0)).collect();
        assert!(used.iter().all(|&(_, len)| len == MIB + 1), "{used:?}");
        (notified, used.len())
    };
    assert_eq!(turn(&mut driver), (Notified::MorePending, 4));
    assert_eq!(turn(&mut driver), (Notified::Done, 4));
    assert_eq!(turn(&mut driver), (Notified::Done, 0));
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
fn a_disk_whose_image_shrank_fails_past_the_new_end_and_never_grows_it() {
    let (block, file) = disk(&[9u8; 2048], false);
    let mut driver = Driver::new(Box::new(block), VERSION_1_AND_FLUSH).ready();
    // Someone truncates the image to 2 of its 4 sectors under the running guest.
    file.set_len(1024).unwrap();
    // `pread` returns 0 bytes past the end, or fewer than asked across it: IOERR, no data.
    assert_eq!(driver.block(0, 3, Some((512, true))), (1, 1), "past");
    assert_eq!(driver.block(0, 1, Some((1024, true))), (1, 1), "across");
    assert_eq!(driver.block(0, 1, Some((512, true))), (0, 513), "before");
    // A write past the new end would grow the file back, with a hole: refused.
    assert_eq!(driver.block(1, 3, Some((512, false))), (1, 1), "write past");
    assert_eq!(file.metadata().unwrap().len(), 1024);
    assert_eq!(
        driver.block(1, 0, Some((512, false))),
        (0, 1),
        "write before"
    );
    // What was written past the end is gone: a flush cannot say it is kept.
    assert_eq!(driver.block(4, 0, None), (1, 1), "flush");
}

#[test]
fn requests_before_driver_ok_wait() {
    let (block, _) = disk(&[0; 1024], false);
    let mut driver = Driver::new(Box::new(block), VERSION_1_AND_FLUSH);
    assert_eq!(driver.notify(0), Notified::Done);
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

/// `struct ifreq` with the flags member, for SIOCGIFFLAGS/SIOCSIFFLAGS.
#[repr(C)]
struct InterfaceFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _rest: [u8; 22],
}

/// Brings the interface `name` up, as `ip link set NAME up` does.
pub(crate) fn bring_up(name: &str) {
    // SAFETY: a socket for the ioctls, closed below.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(socket >= 0, "socket: {}", std::io::Error::last_os_error());
    let mut request = InterfaceFlags {
        name: [0; 16],
        flags: 0,
        _rest: [0; 22],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write a struct ifreq.
    unsafe {
        assert_eq!(libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request), 0);
        request.flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(socket, libc::SIOCSIFFLAGS, &request), 0);
        libc::close(socket);
    }
}

/// Sets the MTU of the interface `name`, as `ip link set NAME mtu MTU` does.
pub(crate) fn set_mtu(name: &str, mtu: i32) {
    #[repr(C)]
    struct InterfaceMtu {
        name: [u8; 16],
        mtu: libc::c_int,
        _rest: [u8; 20],
    }
    let mut request = InterfaceMtu {
        name: [0; 16],
        mtu,
        _rest: [0; 20],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: a socket for the ioctl, closed below; SIOCSIFMTU reads a struct ifreq.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(socket >= 0, "socket: {}", std::io::Error::last_os_error());
        let set = libc::ioctl(socket, libc::SIOCSIFMTU, &request);
        assert_eq!(set, 0, "SIOCSIFMTU: {}", std::io::Error::last_os_error());
        libc::close(socket);
    }
}

/// A packet socket on the interface `name`: every frame in or out of it, as `tcpdump` sees them.
pub(crate) fn packet_socket(name: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket, bind and setsockopt with structures of the sizes given.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all));
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        let mut address: libc::sockaddr_ll = std::mem::zeroed();
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = all;
        let c_name = std::ffi::CString::new(name).unwrap();
        address.sll_ifindex = libc::if_nametoindex(c_name.as_ptr()) as i32;
        let size = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        assert_eq!(libc::bind(fd, (&raw const address).cast(), size), 0);
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        let timeout_size = std::mem::size_of::<libc::timeval>() as u32;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            timeout_size,
        );
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }
}

/// An Ethernet frame of the local experimental type `ethertype` from `source` to everyone.
fn frame(source: [u8; 6], ethertype: u16, text: &[u8]) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&source);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(text);
    frame.resize(60, 0);
    frame
}

/// virtio-net on a real TAP device, in a network namespace of this test's own thread: a frame
/// the guest transmits comes out of the host's interface, and a frame sent on the host's
/// interface waits (no receive buffer yet) and then lands in the guest's buffer behind the
/// virtio-net header. Needs root (a namespace and a TAP device), as CI has.
#[test]
fn a_network_card_on_a_real_tap_device() {
    use super::net::{HEADER_SIZE, Net, RECEIVE_QUEUE, TRANSMIT_QUEUE};
    use super::tap::Tap;

    std::thread::spawn(|| {
        // SAFETY: unshare(2) moves only this thread into a new network namespace.
        let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            unshared,
            0,
            "this test needs root, for a network namespace and a TAP device: {}",
            std::io::Error::last_os_error()
        );
        let tap = Tap::open("mkvm0", HEADER_SIZE).unwrap();
        bring_up("mkvm0");
        let host = packet_socket("mkvm0");
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        let features = FEATURE_VERSION_1 | 1 << 5; // VIRTIO_NET_F_MAC
        let mut driver = Driver::new(Box::new(Net::new(tap, mac)), features).ready();
        assert_eq!(driver.get(0x008), 1, "DeviceID: network card");
        assert_eq!(driver.get(0x100).to_le_bytes(), [0x52, 0x54, 0x00, 0x12]);

        // Transmit: the header (all zero: a plain frame) and the frame, one buffer.
        let sent = frame(mac, 0x88b5, b"from the guest");
        let mut buffer = vec![0u8; HEADER_SIZE];
        buffer.extend_from_slice(&sent);
        driver
            .memory
            .write_slice(&buffer, GuestAddress(BUFFERS))
            .unwrap();
        let length = buffer.len() as u32;
        assert_eq!(
            driver.submit_to(TRANSMIT_QUEUE, &[(BUFFERS, length, false)]),
            0
        );
        let mut seen = [0u8; 2048];
        let arrived = loop {
            // SAFETY: recv into `seen`, at most its length.
            let n = unsafe {
                libc::recv(
                    std::os::fd::AsRawFd::as_raw_fd(&host),
                    seen.as_mut_ptr().cast(),
                    seen.len(),
                    0,
                )
            };
            assert!(n > 0, "the guest's frame never came out of the interface");
            // Skip what the host's own stack sends (IPv6 neighbour discovery, ...).
            if seen[12..14] == [0x88, 0xb5] {
                break seen[..n as usize].to_vec();
            }
        };
        assert_eq!(arrived, sent);

        // Receive: the host sends a frame; with no buffer, the device leaves it in the TAP queue.
        let received = frame([2, 0, 0, 0, 0, 1], 0x88b6, b"from the host");
        // SAFETY: send from `received`, its length.
        let n = unsafe {
            libc::send(
                std::os::fd::AsRawFd::as_raw_fd(&host),
                received.as_ptr().cast(),
                received.len(),
                0,
            )
        };
        assert_eq!(n, received.len() as isize);
        assert_eq!(driver.notify(RECEIVE_QUEUE), Notified::Done);
        assert_eq!(
            driver.take_used(RECEIVE_QUEUE),
            None,
            "no buffer, nothing used"
        );
        // Buffers now, one at a time, until the host's frame is in one (the host's stack may
        // have sent frames of its own first).
        let target = BUFFERS + 0x1000;
        let mut delivered = None;
        for _ in 0..16 {
            driver.offer(RECEIVE_QUEUE, &[(target, 2048, true)]);
            driver.notify(RECEIVE_QUEUE);
            let Some((_, length)) = driver.take_used(RECEIVE_QUEUE) else {
                break;
            };
            let mut bytes = vec![0u8; length as usize];
            driver
                .memory
                .read_slice(&mut bytes, GuestAddress(target))
                .unwrap();
            if bytes.get(HEADER_SIZE + 12..HEADER_SIZE + 14) == Some(&[0x88, 0xb6][..]) {
                delivered = Some(bytes);
                break;
            }
        }
        let delivered = delivered.expect("the host's frame reached a receive buffer");
        // The header: a plain frame, in one buffer (num_buffers = 1), then the frame itself.
        let mut expected = vec![0u8; HEADER_SIZE];
        expected[10] = 1;
        expected.extend_from_slice(&received);
        assert_eq!(delivered, expected);
    })
    .join()
    .unwrap();
}
