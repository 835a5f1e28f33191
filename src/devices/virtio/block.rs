//! virtio-blk (virtio 1.2 §5.2): a disk backed by a raw image file on the host.
//!
//! Each request is one descriptor chain: a 16-byte header the device reads (type, reserved,
//! first sector), then the data (read by the device for a write, written by it for a read), then
//! one status byte the device writes. The device does the request with `pread`/`pwrite` on the
//! image and puts the chain on the used ring with the number of bytes it wrote into it.
//!
//! Requests the guest gets wrong get an error status, never a VMM panic or an access outside
//! the image: a sector range past the end, a length that is not whole sectors, a write to a
//! read-only disk (IOERR), an unknown type (UNSUPP). A chain too short to hold a status byte is
//! returned with used length 0.
//!
//! **How long a request may be.** A request is done whole, on the event loop's thread, so its
//! length bounds how long one request holds the loop. The device offers SEG_MAX (254 segments,
//! which with the header and the status fill the 256-entry queue, as a driver without indirect
//! descriptors needs) and SIZE_MAX (4 KiB a segment): Linux's virtio_blk then never sends more
//! than 254 x 4 KiB = 1016 KiB in one request (it splits longer ones; without SEG_MAX it
//! would send one segment of up to max_sectors_kb, 1280 KiB by default and as much as the
//! guest's administrator likes). A request whose data is longer than [`MAX_REQUEST_BYTES`]
//! gets IOERR without a byte moved, and a chain of more than 256 descriptors is not read at
//! all (mod.rs).
//!
//! **When the host fails.** The image can fail under a running guest: the host's disk fills up
//! (`pwrite` gets ENOSPC), its disk fails (EIO), someone truncates or deletes the file. The
//! guest then gets IOERR, as a real disk's driver would, and mini-kvm says what happened on
//! stderr, once for each kind of trouble (a guest that retries must not flood it). A read
//! past the end of a file that shrank, where `pread` returns fewer bytes than asked, is an
//! IOERR, never zeros; a write past that end is refused (it would grow the file again, with
//! holes where the guest's data was). Writes and flushes to an image that was deleted get
//! IOERR: what the guest writes there is lost when mini-kvm ends, so a flush must not say it
//! is kept.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX,
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::{Queue, Reader, Writer};
use vm_memory::{ByteValued, GuestMemoryMmap};

use super::{
    DEVICE_ID_BLOCK, FEATURE_VERSION_1, MAX_CHAIN_DESCRIPTORS, Served, TurnBudget, VirtioDevice,
    read_config_bytes, serve_requests,
};

/// Sectors are 512 bytes, whatever the host's disk uses.
pub const SECTOR_SIZE: u64 = 512;
/// Data moves between the image and guest memory through a buffer of this size: bounded memory
/// whatever length a request claims.
const CHUNK: usize = 64 * 1024;
/// The configuration's seg_max: the most data segments in a request, so that the header, the
/// data and the status fit the queue (and [`MAX_CHAIN_DESCRIPTORS`]).
pub const SEG_MAX: u32 = MAX_CHAIN_DESCRIPTORS as u32 - 2;
/// The configuration's size_max: the most bytes in one segment (a page).
pub const SIZE_MAX: u32 = 4096;
/// The longest request done: 1 MiB of data. A driver that honours seg_max and size_max sends
/// at most 1016 KiB; a longer request gets IOERR and moves nothing.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
const _: () = assert!(SEG_MAX as usize * SIZE_MAX as usize <= MAX_REQUEST_BYTES);

/// The request header (struct virtio_blk_outhdr).
#[derive(Debug, Default, Clone, Copy)]
#[repr(C)]
struct RequestHeader {
    request_type: u32,
    reserved: u32,
    sector: u64,
}

// SAFETY: plain integers, no padding (4 + 4 + 8 bytes): any bytes are a valid header.
unsafe impl ByteValued for RequestHeader {}

pub struct Block {
    image: File,
    /// The image as the user named it (its path), for the messages on stderr.
    shown: String,
    /// Whether the image had a name in a directory when the disk was made: only such an image
    /// can be deleted under the guest (an unnamed temporary file never had one).
    was_linked: bool,
    /// The kinds of [`Trouble`] already reported on stderr (bit [`Trouble::bit`]).
    reported: u8,
    capacity_sectors: u64,
    read_only: bool,
    /// GET_ID's answer: up to 20 bytes, NUL-padded (the image's file name).
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
    buffer: Vec<u8>,
}

impl Block {
    /// A disk on `image` (already open, read-write unless `read_only`) of `size` bytes; its
    /// capacity is the whole sectors in it.
    pub fn new(image: File, size: u64, read_only: bool, id: &str) -> Block {
        let mut id_bytes = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let id = id.as_bytes();
        let len = id.len().min(id_bytes.len());
        id_bytes[..len].copy_from_slice(&id[..len]);
        let was_linked = image_status(&image).is_ok_and(|status| status.links > 0);
        Block {
            image,
            shown: String::from_utf8_lossy(id).into_owned(),
            was_linked,
            reported: 0,
            capacity_sectors: size / SECTOR_SIZE,
            read_only,
            id: id_bytes,
            buffer: vec![0; CHUNK],
        }
    }

    /// Does one request; returns its status, how many data bytes went into the guest, and how
    /// many moved either way.
    fn execute(
        &mut self,
        header: RequestHeader,
        data_in: &mut Reader,
        data_out: &mut Writer,
    ) -> (u8, usize, usize) {
        let (status, into_guest) = match header.request_type {
            VIRTIO_BLK_T_IN => match self.transfer_range(header.sector, data_out.available_bytes())
            {
                Some(offset) => self.read_into_guest(offset, data_out),
                None => (VIRTIO_BLK_S_IOERR as u8, 0),
            },
            VIRTIO_BLK_T_OUT if self.read_only => (VIRTIO_BLK_S_IOERR as u8, 0),
            VIRTIO_BLK_T_OUT => match self.transfer_range(header.sector, data_in.available_bytes())
            {
                Some(offset) => {
                    let end = offset + data_in.available_bytes() as u64;
                    if let Err(trouble) = self.image_intact(end) {
                        self.report(trouble);
                        return (VIRTIO_BLK_S_IOERR as u8, 0, 0);
                    }
                    let header_read = data_in.bytes_read();
                    let status = self.write_from_guest(offset, data_in);
                    return (status, 0, data_in.bytes_read() - header_read);
                }
                None => (VIRTIO_BLK_S_IOERR as u8, 0),
            },
            VIRTIO_BLK_T_FLUSH if self.read_only => (VIRTIO_BLK_S_OK as u8, 0),
            VIRTIO_BLK_T_FLUSH => (self.flush(), 0),
            VIRTIO_BLK_T_GET_ID => {
                let len = self.id.len().min(data_out.available_bytes());
                match data_out.write_all(&self.id[..len]) {
                    Ok(()) => (VIRTIO_BLK_S_OK as u8, len),
                    Err(_) => (VIRTIO_BLK_S_IOERR as u8, 0),
                }
            }
            _ => (VIRTIO_BLK_S_UNSUPP as u8, 0),
        };
        (status, into_guest, into_guest)
    }

    /// The byte offset of a transfer of `len` bytes from `sector`, if it is whole sectors
    /// inside the disk and no longer than [`MAX_REQUEST_BYTES`].
    fn transfer_range(&self, sector: u64, len: usize) -> Option<u64> {
        if len > MAX_REQUEST_BYTES {
            return None;
        }
        let len = len as u64;
        let sectors = len / SECTOR_SIZE;
        let end = sector.checked_add(sectors)?;
        (len.is_multiple_of(SECTOR_SIZE) && end <= self.capacity_sectors)
            .then_some(sector * SECTOR_SIZE)
    }

    fn read_into_guest(&mut self, mut offset: u64, data_out: &mut Writer) -> (u8, usize) {
        let mut moved = 0;
        while data_out.available_bytes() > 0 {
            let chunk = data_out.available_bytes().min(CHUNK);
            let buffer = &mut self.buffer[..chunk];
            // read_exact_at: a `pread` that returns fewer bytes than asked (the file ends
            // sooner: it shrank) is an error, not a buffer left with stale bytes.
            if let Err(error) = self.image.read_exact_at(buffer, offset) {
                let trouble = match self.image_intact(offset + chunk as u64) {
                    Err(trouble @ Trouble::Shrunk { .. }) => trouble,
                    _ => Trouble::Read(error),
                };
                self.report(trouble);
                return (VIRTIO_BLK_S_IOERR as u8, moved);
            }
            if data_out.write_all(buffer).is_err() {
                return (VIRTIO_BLK_S_IOERR as u8, moved);
            }
            offset += chunk as u64;
            moved += chunk;
        }
        (VIRTIO_BLK_S_OK as u8, moved)
    }

    fn write_from_guest(&mut self, mut offset: u64, data_in: &mut Reader) -> u8 {
        while data_in.available_bytes() > 0 {
            let chunk = data_in.available_bytes().min(CHUNK);
            let buffer = &mut self.buffer[..chunk];
            if data_in.read_exact(buffer).is_err() {
                return VIRTIO_BLK_S_IOERR as u8;
            }
            // write_all_at: a short `pwrite` (the host's disk filled up halfway) is tried again
            // for the rest, which then fails with ENOSPC.
            if let Err(error) = self.image.write_all_at(buffer, offset) {
                self.report(Trouble::Write(error));
                return VIRTIO_BLK_S_IOERR as u8;
            }
            offset += chunk as u64;
        }
        VIRTIO_BLK_S_OK as u8
    }

    /// FLUSH: `fdatasync`. When the guest sees OK, every write it was told was OK is on the
    /// host's disk, in the image the user named: so IOERR if the image shrank or was deleted
    /// since (what was written there is gone, or will be), or if `fdatasync` fails.
    fn flush(&mut self) -> u8 {
        let capacity = self.capacity_sectors * SECTOR_SIZE;
        let outcome = self
            .image_intact(capacity)
            .and_then(|()| self.image.sync_data().map_err(Trouble::Flush));
        match outcome {
            Ok(()) => VIRTIO_BLK_S_OK as u8,
            Err(trouble) => {
                self.report(trouble);
                VIRTIO_BLK_S_IOERR as u8
            }
        }
    }

    /// Whether the image is still the file the disk was made on, reaching at least to byte
    /// `end`: not deleted, not truncated before `end`.
    fn image_intact(&self, end: u64) -> Result<(), Trouble> {
        // fstat on a descriptor we hold does not fail in practice; if it does, the image
        // cannot be checked, and the request fails as a read of it would.
        let status = image_status(&self.image).map_err(Trouble::Read)?;
        if self.was_linked && status.links == 0 {
            return Err(Trouble::Deleted);
        }
        if status.size < end {
            return Err(Trouble::Shrunk { size: status.size });
        }
        Ok(())
    }

    /// Says what went wrong on stderr, the first time this kind of trouble happens.
    fn report(&mut self, trouble: Trouble) {
        if self.reported & trouble.bit() != 0 {
            return;
        }
        self.reported |= trouble.bit();
        let capacity = self.capacity_sectors * SECTOR_SIZE;
        let what = match &trouble {
            Trouble::Read(error) => format!("a read failed: {error}"),
            Trouble::Write(error) => format!("a write failed: {error}"),
            Trouble::Flush(error) => format!("a flush (fdatasync) failed: {error}"),
            Trouble::Shrunk { size } => format!(
                "it shrank under the running guest, to {size} bytes from {capacity}: \
                 requests past its end fail"
            ),
            Trouble::Deleted => "it was deleted under the running guest: writes and flushes \
                                 fail (what it holds is lost when mini-kvm ends)"
                .to_string(),
        };
        // Not eprintln!: a closed stderr must not panic the event loop.
        let _ = writeln!(
            crate::console::stderr::stderr(),
            "mini-kvm: virtio-blk: the disk image {}: {what}; the guest gets I/O errors \
             (said once)",
            self.shown
        );
    }
}

impl VirtioDevice for Block {
    fn name(&self) -> &'static str {
        "virtio-blk"
    }

    fn device_id(&self) -> u32 {
        DEVICE_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let read_only = if self.read_only {
            1 << VIRTIO_BLK_F_RO
        } else {
            0
        };
        FEATURE_VERSION_1
            | 1 << VIRTIO_BLK_F_FLUSH
            | 1 << VIRTIO_BLK_F_SIZE_MAX
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | read_only
    }

    fn queue_sizes(&self) -> &'static [u16] {
        &[256]
    }

    /// The configuration (struct virtio_blk_config): its first three fields, the capacity in
    /// sectors, size_max and seg_max (no feature bits announce the others).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 16];
        config[..8].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        config[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        config[12..].copy_from_slice(&SEG_MAX.to_le_bytes());
        read_config_bytes(&config, offset, data);
    }

    fn process_queue(
        &mut self,
        _index: usize,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
        budget: &mut TurnBudget,
    ) -> Result<usize, virtio_queue::Error> {
        serve_requests(queue, memory, budget, |chain| {
            match (chain.clone().reader(memory), chain.writer(memory)) {
                (Ok(mut reader), Ok(mut writer)) => self.request(&mut reader, &mut writer),
                // Descriptors outside RAM: nothing can be written back.
                _ => Served::NOTHING,
            }
        })
    }
}

impl Block {
    /// One chain: the header from the readable part, the status byte at the end of the writable
    /// part, the data between. Its used length is the data written into the guest + status.
    fn request(&mut self, reader: &mut Reader, writer: &mut Writer) -> Served {
        let Some(status_at) = writer.available_bytes().checked_sub(1) else {
            return Served::NOTHING;
        };
        let Ok(mut status) = writer.split_at(status_at) else {
            return Served::NOTHING;
        };
        let (code, into_guest, moved) = match reader.read_obj::<RequestHeader>() {
            Ok(header) => self.execute(header, reader, writer),
            Err(_) => (VIRTIO_BLK_S_IOERR as u8, 0, 0),
        };
        let status_written = usize::from(status.write_all(&[code]).is_ok());
        Served {
            used_len: (into_guest + status_written) as u32,
            bytes_moved: moved as u64,
        }
    }
}

/// What can go wrong with the image under a running guest (each is reported once).
#[derive(Debug)]
enum Trouble {
    Read(std::io::Error),
    Write(std::io::Error),
    Flush(std::io::Error),
    Shrunk { size: u64 },
    Deleted,
}

impl Trouble {
    fn bit(&self) -> u8 {
        match self {
            Trouble::Read(_) => 1,
            Trouble::Write(_) => 2,
            Trouble::Flush(_) => 4,
            Trouble::Shrunk { .. } => 8,
            Trouble::Deleted => 16,
        }
    }
}

/// The image's size and how many names it has in directories (0: deleted).
struct ImageStatus {
    size: u64,
    links: u64,
}

/// `fstat` on the image. The system call itself, not glibc's `fstat` (or std's metadata):
/// those make `newfstatat`/`statx`, which take a path, and the event loop's seccomp filter
/// allows only `fstat`, which takes nothing but a descriptor (src/vmm/seccomp.rs).
fn image_status(image: &File) -> std::io::Result<ImageStatus> {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero bytes are a valid `stat` (plain integers).
    let mut status: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat` into memory we own, for a descriptor we own.
    let result = unsafe { libc::syscall(libc::SYS_fstat, image.as_raw_fd(), &mut status) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ImageStatus {
        size: status.st_size as u64,
        links: status.st_nlink,
    })
}

/// Why a disk image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot open the disk image {path}: {source}{hint}")]
    Open {
        path: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error(
        "the disk image {path} is not a regular file: --disk takes a raw image file (e.g. made with truncate -s 64M disk.img)"
    )]
    NotAFile { path: String },
    #[error(
        "the disk image {path} is in use by another program that locked it (another mini-kvm?); give each guest its own image, or add ,ro to share it read-only"
    )]
    InUse { path: String },
}

impl Block {
    /// Opens the raw image at `path` for a disk (read-only with `read_only`) and locks it, so
    /// that two VMs never write one image: exclusively for a writable disk, shared for a
    /// read-only one.
    pub fn open(path: &std::path::Path, read_only: bool) -> Result<Block, DiskError> {
        use std::os::fd::AsRawFd;
        let shown = path.display().to_string();
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking: opening a FIFO for reading would otherwise wait for a writer for ever.
        // The check below then refuses it; on a regular file the flag changes nothing.
        let image = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| {
                if source.raw_os_error() == Some(libc::EISDIR) {
                    return DiskError::NotAFile {
                        path: shown.clone(),
                    };
                }
                let hint = match source.raw_os_error() {
                    Some(libc::EACCES) | Some(libc::EROFS) | Some(libc::EPERM) if !read_only => {
                        " (to use it read-only, add ,ro: --disk FILE,ro)"
                    }
                    _ => "",
                };
                DiskError::Open {
                    path: shown.clone(),
                    source,
                    hint,
                }
            })?;
        let metadata = image.metadata().map_err(|source| DiskError::Open {
            path: shown.clone(),
            source,
            hint: "",
        })?;
        if !metadata.is_file() {
            return Err(DiskError::NotAFile { path: shown });
        }
        let lock = if read_only {
            libc::LOCK_SH
        } else {
            libc::LOCK_EX
        };
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(image.as_raw_fd(), lock | libc::LOCK_NB) } != 0 {
            return Err(DiskError::InUse { path: shown });
        }
        let id = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut block = Block::new(image, metadata.len(), read_only, &id);
        block.shown = shown;
        Ok(block)
    }

    /// The disk's size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }
}
