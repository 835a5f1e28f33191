//! What goes into guest memory, nothing else: built-in guests, image format detection, placing
//! an image at its load address, and the boot information a kernel is handed.
//!
//! [`load`] is the one entry point: it tells the format from the content and returns where and in
//! which CPU mode the guest starts ([`Entry`]); src/vmm/builder.rs turns that into registers.

pub mod builtin;
pub mod bzimage;
pub mod detect;
pub mod elf;
pub mod flat;
pub mod initramfs;
pub mod linux;
pub mod multiboot;
pub mod pvh;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86::layout::{
    BOOT_INFO_ADDRESS, BOOT_INFO_SIZE, FLAT_LOAD_ADDRESS, INITIAL_STACK_TOP, VMM_TABLES_END,
    VMM_TABLES_START, low_ram_end,
};
use crate::arch::x86::modes::EntryRegisters;
pub use builtin::{BuiltinGuest, BuiltinKind, GuestMode, builtin_guest, builtin_guests};
pub use detect::ImageFormat;

#[derive(Debug, Error)]
pub enum LoaderError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: FileRole,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} is a directory, not a file")]
    IsDirectory { what: FileRole, path: PathBuf },
    #[error(
        "{what} {path}: reading it took longer than --timeout ({seconds} s; {read} of \
         {size} bytes read), so it was not run"
    )]
    ReadTimedOut {
        what: FileRole,
        path: PathBuf,
        seconds: f64,
        read: u64,
        size: u64,
    },
    #[error("{what} {path} is {kind}, not a regular file: mini-kvm reads only regular files")]
    NotARegularFile {
        what: FileRole,
        path: PathBuf,
        kind: &'static str,
    },
    #[error(
        "{what} {path} is {size} bytes, more than the guest's {memory} bytes of RAM: give the \
         guest more memory with --mem, or check the file"
    )]
    LargerThanMemory {
        what: FileRole,
        path: PathBuf,
        size: u64,
        memory: u64,
    },
    #[error("guest image {name} is empty: there is nothing to run")]
    Empty { name: String },
    #[error(
        "guest image {name} is {size} bytes, but only {room} bytes fit between the load address \
         {load_address:#x} and {limit_what} ({limit:#x}){hint}"
    )]
    TooLarge {
        name: String,
        size: u64,
        room: u64,
        load_address: u64,
        limit: u64,
        limit_what: &'static str,
        hint: &'static str,
    },
    #[error(
        "{name} is {format}, which starts in the mode its format defines: --mode and --paging \
         apply only to flat binaries"
    )]
    ModeForKernel { name: String, format: &'static str },
    #[error("{name} is {format}: --cmdline applies only to multiboot, PVH and Linux kernels")]
    CmdlineNotSupported { name: String, format: &'static str },
    #[error(
        "{name} is {format}: --initrd applies only to Linux kernels (a bzImage, or a vmlinux \
         with a PVH entry)"
    )]
    InitrdNotSupported { name: String, format: &'static str },
    #[error("{name} is a Linux bzImage mini-kvm cannot boot: {reason}")]
    BadBzImage { name: String, reason: String },
    #[error("the initramfs for {name} is empty: leave out --initrd, or give it an archive")]
    InitrdEmpty { name: String },
    #[error(
        "the initramfs for {name} is {size} bytes, but only {room} bytes of RAM below 3 GiB are \
         left above the kernel: give the guest more memory with --mem (e.g. --mem {suggest}M)"
    )]
    InitrdDoesNotFit {
        name: String,
        size: u64,
        room: u64,
        suggest: u64,
    },
    #[error("the command line is {len} bytes: at most {max} fit in the boot information page")]
    CmdlineTooLong { len: usize, max: u64 },
    #[error(
        "{name} is an ELF{class} file for {machine}, not for x86: mini-kvm runs x86 guests only"
    )]
    ForeignElf {
        name: String,
        class: u32,
        machine: String,
    },
    #[error("{name} is not an ELF executable mini-kvm can load: {reason}")]
    BadElf { name: String, reason: &'static str },
    #[error(
        "{name} does not fit in guest memory: it loads {start:#x}-{end:#x}, but guest RAM ends at \
         {ram_end:#x}: give the guest more memory with --mem (e.g. --mem {suggest}M)"
    )]
    OutsideMemory {
        name: String,
        start: u64,
        end: u64,
        ram_end: u64,
        suggest: u64,
    },
    #[error(
        "{name} loads {start:#x}-{end:#x}, overlapping the VMM's own tables at \
         {tables_start:#x}-{tables_end:#x} (GDT, TSS, boot information, page tables; see \
         docs/memory-map.md): link it at {tables_end:#x} or above (1 MiB is usual for kernels)",
        tables_start = VMM_TABLES_START,
        tables_end = VMM_TABLES_END
    )]
    OverlapsVmmTables { name: String, start: u64, end: u64 },
    #[error("{name}: its entry point {entry:#x} is outside guest RAM")]
    EntryOutsideMemory { name: String, entry: u64 },
    #[error("{name} is a multiboot kernel mini-kvm cannot boot: {what}")]
    MultibootUnsupported { name: String, what: &'static str },
    #[error("cannot load the ELF64 file: {0}")]
    Elf64(#[from] linux_loader::loader::Error),
    #[error("cannot write the PVH start information: {0}")]
    Pvh(#[from] linux_loader::configurator::Error),
    #[error("cannot write the image into guest memory: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}

/// Where a guest starts, as the loader worked it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub mode: GuestMode,
    /// Ignored in real mode (docs/memory-map.md: CS:IP = 1000:0000).
    pub registers: EntryRegisters,
    /// How the guest is booted.
    pub protocol: BootProtocol,
    /// A multiboot kernel that asked for a linear framebuffer: the mode the display adapter is
    /// switched to before it starts.
    pub video: Option<multiboot::VideoMode>,
}

/// How a guest is booted: the format of its image and the hand-over that format defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootProtocol {
    /// A flat binary, loaded at 0x10000 in the mode `--mode` asks for.
    Flat,
    /// A multiboot (version 1) kernel.
    Multiboot,
    /// An ELF kernel with a PVH entry note.
    Pvh,
    /// An ELF32 file, entered at its entry point in protected mode.
    Elf32,
    /// An ELF64 file, entered at its entry point in long mode.
    Elf64,
    /// Linux's uncompressed kernel (vmlinux), through its PVH entry.
    LinuxPvh,
    /// Linux's bzImage, through the 64-bit boot protocol.
    LinuxBzImage,
}

impl BootProtocol {
    /// The name `--verbose` gives it.
    pub fn name(self) -> &'static str {
        match self {
            BootProtocol::Flat => "flat binary",
            BootProtocol::Multiboot => "multiboot",
            BootProtocol::Pvh => "PVH",
            BootProtocol::Elf32 => "ELF32",
            BootProtocol::Elf64 => "ELF64",
            BootProtocol::LinuxPvh => "Linux vmlinux (PVH entry)",
            BootProtocol::LinuxBzImage => "Linux bzImage (64-bit boot protocol)",
        }
    }

    /// A Linux kernel. Its console is the UART (`console=ttyS0`): stdin goes to the UART alone,
    /// and the keyboard, which Linux probes at boot, must not take it. It gets ACPI tables (the
    /// loader has told it where the RSDP is) and Linux's memory map. And a warm reset is its
    /// panic (`reboot=panic_warm` in the default command line: src/vmm/vm.rs).
    pub fn is_linux(self) -> bool {
        matches!(self, BootProtocol::LinuxPvh | BootProtocol::LinuxBzImage)
    }
}

impl std::fmt::Display for BootProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the command line asked for, as far as loading is concerned.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions<'a> {
    /// `--mode`/`--paging` for a flat binary; `None`: real mode (or the built-in's own mode).
    pub flat_mode: Option<GuestMode>,
    /// `--cmdline`, for multiboot, PVH and Linux kernels.
    pub cmdline: Option<&'a str>,
    /// `--initrd`: the initramfs of a Linux bzImage.
    pub initrd: Option<&'a [u8]>,
    /// The guest has a display (a multiboot kernel may then ask for a framebuffer).
    pub display: bool,
}

/// Puts `image` into guest memory according to its format and returns its entry.
pub fn load(
    memory: &GuestMemoryMmap,
    name: &str,
    image: &[u8],
    options: &LoadOptions,
) -> Result<Entry, LoaderError> {
    if image.is_empty() {
        return Err(LoaderError::Empty {
            name: name.to_string(),
        });
    }
    let format = ImageFormat::detect(image);
    let is_kernel = format != ImageFormat::Flat;
    if is_kernel && options.flat_mode.is_some() {
        return Err(LoaderError::ModeForKernel {
            name: name.to_string(),
            format: format.name(),
        });
    }
    // (An ELF may be a Linux vmlinux, which takes one: the ELF branch checks.)
    let takes_initrd = matches!(format, ImageFormat::BzImage | ImageFormat::Elf64);
    if options.initrd.is_some() && !takes_initrd {
        return Err(LoaderError::InitrdNotSupported {
            name: name.to_string(),
            format: format.name(),
        });
    }
    let cmdline = options.cmdline.unwrap_or("");
    let kernel_entry = |mode, registers, protocol| Entry {
        mode,
        registers,
        protocol,
        video: None,
    };
    let protected = GuestMode::Protected { paging: false };
    let entry = match format {
        ImageFormat::Flat => {
            if options.cmdline.is_some() {
                return Err(LoaderError::CmdlineNotSupported {
                    name: name.to_string(),
                    format: format.name(),
                });
            }
            let mode = options.flat_mode.unwrap_or(GuestMode::Real);
            flat::load_flat_image(memory, name, image, mode)?;
            let registers = EntryRegisters {
                entry: FLAT_LOAD_ADDRESS,
                stack: INITIAL_STACK_TOP,
                rax: 0,
                rbx: 0,
                rsi: 0,
            };
            kernel_entry(mode, registers, BootProtocol::Flat)
        }
        ImageFormat::Multiboot { header } => {
            let (registers, video) =
                multiboot::load(name, image, header, memory, cmdline, options.display)?;
            Entry {
                video,
                ..kernel_entry(protected, registers, BootProtocol::Multiboot)
            }
        }
        ImageFormat::Elf32 | ImageFormat::Elf64 | ImageFormat::ElfOther => {
            // (ElfOther: `parse` says what is wrong with its class.)
            let elf = elf::ElfImage::parse(name, image)?;
            elf.check_placement(name, memory)?;
            let pvh_entry = elf.load(image, memory)?;
            if pvh_entry.is_none() && options.cmdline.is_some() {
                return Err(LoaderError::CmdlineNotSupported {
                    name: name.to_string(),
                    format: format.name(),
                });
            }
            let entry = pvh_entry.unwrap_or(elf.entry);
            if !elf::entry_in_ram(memory, entry) {
                return Err(LoaderError::EntryOutsideMemory {
                    name: name.to_string(),
                    entry,
                });
            }
            let linux = pvh_entry.is_some() && linux::is_linux(image);
            if options.initrd.is_some() && !linux {
                return Err(LoaderError::InitrdNotSupported {
                    name: name.to_string(),
                    format: format.name(),
                });
            }
            match (elf.is_64, pvh_entry) {
                // Linux's uncompressed kernel, through its PVH entry, as a Linux guest.
                (_, Some(entry)) if linux => {
                    let cmdline = options.cmdline.unwrap_or(linux::DEFAULT_CMDLINE);
                    let initrd = match options.initrd {
                        Some(initrd) => Some(linux::place_initrd(
                            memory,
                            name,
                            initrd,
                            elf.end(),
                            u64::MAX,
                        )?),
                        None => None,
                    };
                    let registers = pvh::prepare_linux(memory, entry, cmdline, initrd)?;
                    kernel_entry(protected, registers, BootProtocol::LinuxPvh)
                }
                (_, Some(entry)) => kernel_entry(
                    protected,
                    pvh::prepare(memory, entry, cmdline)?,
                    BootProtocol::Pvh,
                ),
                (is_64, None) => {
                    let registers = EntryRegisters {
                        entry,
                        stack: INITIAL_STACK_TOP,
                        rax: 0,
                        rbx: 0,
                        rsi: 0,
                    };
                    if is_64 {
                        kernel_entry(GuestMode::Long, registers, BootProtocol::Elf64)
                    } else {
                        kernel_entry(protected, registers, BootProtocol::Elf32)
                    }
                }
            }
        }
        ImageFormat::BzImage => {
            let cmdline = options.cmdline.unwrap_or(linux::DEFAULT_CMDLINE);
            let registers = bzimage::load(memory, name, image, cmdline, options.initrd)?;
            kernel_entry(GuestMode::Long, registers, BootProtocol::LinuxBzImage)
        }
    };
    Ok(entry)
}

/// Checks that `[start, start + len)` is guest RAM and clear of the VMM's tables.
pub fn check_load_range(
    name: &str,
    memory: &GuestMemoryMmap,
    start: u64,
    len: u64,
) -> Result<(), LoaderError> {
    let ram_end = low_ram_end(ram_size(memory));
    let end = start.saturating_add(len);
    // Images load below the MMIO hole: a range that reaches past the low RAM is refused even
    // when RAM continues at 4 GiB.
    if end > ram_end {
        return Err(LoaderError::OutsideMemory {
            name: name.to_string(),
            start,
            end,
            ram_end,
            suggest: end.div_ceil(1 << 20).next_power_of_two(),
        });
    }
    if start < VMM_TABLES_END && end > VMM_TABLES_START {
        return Err(LoaderError::OverlapsVmmTables {
            name: name.to_string(),
            start,
            end,
        });
    }
    Ok(())
}

/// The boot-information page (BOOT_INFO_ADDRESS): the protocol's structure at offset 0, then:
pub const BOOT_MEMORY_MAP_OFFSET: u64 = 0x100;
pub const BOOT_LOADER_NAME_OFFSET: u64 = 0x180;
/// PVH's module list (one 32-byte entry: a Linux vmlinux's initramfs), where multiboot has
/// its loader name.
pub const BOOT_MODULES_OFFSET: u64 = 0x1c0;
pub const BOOT_CMDLINE_OFFSET: u64 = 0x200;
/// The command line's room, less its terminating NUL.
pub const BOOT_CMDLINE_MAX: u64 = BOOT_INFO_SIZE - BOOT_CMDLINE_OFFSET - 1;
/// The boot loader name a multiboot kernel is told.
pub const BOOT_LOADER_NAME: &[u8] = b"mini-kvm\0";

/// The total size of guest RAM, in bytes (all its regions).
pub fn ram_size(memory: &GuestMemoryMmap) -> u64 {
    memory.iter().map(|region| region.len()).sum()
}

/// Writes the NUL-terminated command line into the boot-information page; returns its address.
pub fn write_cmdline(memory: &GuestMemoryMmap, cmdline: &str) -> Result<u64, LoaderError> {
    if cmdline.len() as u64 > BOOT_CMDLINE_MAX {
        return Err(LoaderError::CmdlineTooLong {
            len: cmdline.len(),
            max: BOOT_CMDLINE_MAX,
        });
    }
    let address = BOOT_INFO_ADDRESS + BOOT_CMDLINE_OFFSET;
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    memory.write_slice(&bytes, GuestAddress(address))?;
    Ok(address)
}

/// An image is read this much at a time, the `--timeout` checked between chunks.
const READ_CHUNK: u64 = 16 << 20;

/// What a file read from disk is for, as its errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// The guest's image (a flat binary or a kernel).
    GuestImage,
    /// `--initrd`.
    Initramfs,
}

impl std::fmt::Display for FileRole {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            FileRole::GuestImage => "guest image",
            FileRole::Initramfs => "initramfs",
        })
    }
}

/// Reads a guest image from disk, with errors that name the file; see `read_file`.
pub fn read_image_file(
    path: &Path,
    memory: u64,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, LoaderError> {
    read_file(FileRole::GuestImage, path, memory, timeout)
}

/// Reads a file for the guest (its image, or its initramfs), with errors that name the file.
/// Only a regular file is read, and only if it is no larger than `memory` (the guest's RAM): a
/// FIFO or a device could block or never end, and a huge file could not fit anyway. Both are
/// refused before any byte is read.
/// With a `timeout` (`--timeout`), a read not done within it stops between two chunks (a
/// multi-gigabyte image on a slow disk must not outlast the time the user gave the guest).
pub fn read_file(
    what: FileRole,
    path: &Path,
    memory: u64,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, LoaderError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

    let read_error = |source| LoaderError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. It changes
    // nothing for a regular file, the only kind read below.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    let file_type = metadata.file_type();
    let kind = if file_type.is_dir() {
        return Err(LoaderError::IsDirectory {
            what,
            path: path.to_path_buf(),
        });
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        ""
    };
    if !kind.is_empty() {
        return Err(LoaderError::NotARegularFile {
            what,
            path: path.to_path_buf(),
            kind,
        });
    }
    if metadata.len() > memory {
        return Err(LoaderError::LargerThanMemory {
            what,
            path: path.to_path_buf(),
            size: metadata.len(),
            memory,
        });
    }
    // The file may still grow while we read: never take more than fits.
    let started = Instant::now();
    let mut image = Vec::with_capacity(metadata.len() as usize);
    let mut rest = file.take(memory + 1);
    loop {
        let read = (&mut rest)
            .take(READ_CHUNK)
            .read_to_end(&mut image)
            .map_err(read_error)?;
        if read == 0 {
            break;
        }
        if let Some(timeout) = timeout.filter(|&timeout| started.elapsed() > timeout) {
            return Err(LoaderError::ReadTimedOut {
                what,
                path: path.to_path_buf(),
                seconds: timeout.as_secs_f64(),
                read: image.len() as u64,
                size: metadata.len(),
            });
        }
    }
    if image.len() as u64 > memory {
        return Err(LoaderError::LargerThanMemory {
            what,
            path: path.to_path_buf(),
            size: image.len() as u64,
            memory,
        });
    }
    Ok(image)
}
