//! Linux's bzImage, booted through the 64-bit boot protocol (Documentation/arch/x86/boot.rst):
//! the way kvmtool, Firecracker and cloud-hypervisor start a `/boot/vmlinuz-*` without firmware.
//!
//! A bzImage is a small real-mode "setup" program followed by the protected-mode kernel (itself
//! a decompressor and the compressed kernel). A VMM skips the setup program and does its job:
//!
//! 1. read the *setup header* (at offset 0x1f1: "HdrS", the protocol version, where the kernel
//!    wants to be loaded, how much room it needs to decompress itself);
//! 2. copy the protected-mode kernel to its load address (1 MiB);
//! 3. fill in the *zero page* (`boot_params`): the setup header, with the fields a boot loader
//!    sets (who loaded it, where the command line and the initramfs are), and the E820 memory
//!    map;
//! 4. start the CPU in 64-bit mode, paging on with an identity map, at the load address + 0x200
//!    (`startup_64`), with RSI = the zero page's address.
//!
//! linux-loader reads the header and copies the kernel; the zero page is filled in here.

use std::io::Cursor;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::KernelLoader;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::bzimage::BzImage;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::linux::{linux_memory_map, place_initrd};
use super::{LoaderError, ram_size};
use crate::arch::x86::layout::{
    ACPI_RSDP_ADDRESS, BOOT_INFO_ADDRESS, INITIAL_STACK_TOP, LINUX_CMDLINE_ADDRESS,
    LINUX_CMDLINE_MAX, LINUX_KERNEL_ADDRESS, low_ram_end,
};
use crate::arch::x86::modes::EntryRegisters;

/// `type_of_loader`: 0xff, "undefined", what a boot loader without an assigned ID says.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// `xloadflags` bit 0: the kernel has the 64-bit entry point at load address + 0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// The 64-bit entry point's offset from the load address.
const STARTUP_64_OFFSET: u64 = 0x200;
/// The first protocol version with `xloadflags` (2.12).
const PROTOCOL_WITH_XLOADFLAGS: u16 = 0x020c;
/// Where the setup header keeps `kernel_alignment`, `pref_address` and `init_size` (boot
/// protocol 2.10 and later).
const KERNEL_ALIGNMENT_OFFSET: usize = 0x230;
const PREF_ADDRESS_OFFSET: usize = 0x258;
const INIT_SIZE_OFFSET: usize = 0x260;
/// The zero page has room for this many E820 entries.
const E820_MAX_ZEROPAGE: usize = 128;

/// Loads a bzImage, its initramfs and its command line; returns the 64-bit entry registers.
pub fn load(
    memory: &GuestMemoryMmap,
    name: &str,
    image: &[u8],
    cmdline: &str,
    initrd: Option<&[u8]>,
) -> Result<EntryRegisters, LoaderError> {
    let bad = |reason: String| LoaderError::BadBzImage {
        name: name.to_string(),
        reason,
    };
    // The kernel needs room to decompress itself: `init_size` bytes from where it runs, which
    // (a relocatable kernel) is its load address rounded up to `kernel_alignment`, but not
    // below `pref_address` (its link address: 16 MiB for Debian's). Checked before
    // linux-loader copies the kernel, so that a --mem too small gets this error, not a copy
    // failure or a triple fault in the decompressor (seen with --mem 60M before this check).
    let header_u32 = |at: usize| {
        image
            .get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let header_u64 = |at: usize| u64::from(header_u32(at)) | (u64::from(header_u32(at + 4)) << 32);
    let alignment = u64::from(header_u32(KERNEL_ALIGNMENT_OFFSET)).max(1);
    let runs_at = LINUX_KERNEL_ADDRESS
        .next_multiple_of(alignment)
        .max(header_u64(PREF_ADDRESS_OFFSET));
    let low_end = low_ram_end(ram_size(memory));
    let kernel_end = runs_at
        .saturating_add(u64::from(header_u32(INIT_SIZE_OFFSET)))
        .max(LINUX_KERNEL_ADDRESS + image.len() as u64);
    if kernel_end > low_end {
        return Err(LoaderError::OutsideMemory {
            name: name.to_string(),
            start: LINUX_KERNEL_ADDRESS,
            end: kernel_end,
            ram_end: low_end,
            suggest: (kernel_end >> 20) + 16,
        });
    }
    let loaded = BzImage::load(
        memory,
        Some(GuestAddress(LINUX_KERNEL_ADDRESS)),
        &mut Cursor::new(image),
        Some(GuestAddress(LINUX_KERNEL_ADDRESS)),
    )
    .map_err(|error| bad(error.to_string()))?;
    let mut header = loaded
        .setup_header
        .ok_or_else(|| bad("linux-loader found no setup header".into()))?;

    let version = header.version;
    let xloadflags = header.xloadflags;
    if version < PROTOCOL_WITH_XLOADFLAGS || xloadflags & XLF_KERNEL_64 == 0 {
        return Err(bad(format!(
            "it has no 64-bit entry point (boot protocol {}.{}, xloadflags {xloadflags:#x}): \
             mini-kvm boots 64-bit kernels with protocol 2.12 or later",
            version >> 8,
            version & 0xff
        )));
    }

    // The command line, where the kernel can find it before it has set up its own memory.
    let max = u64::from(header.cmdline_size).clamp(255, LINUX_CMDLINE_MAX);
    if cmdline.len() as u64 > max {
        return Err(LoaderError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    memory.write_slice(&bytes, GuestAddress(LINUX_CMDLINE_ADDRESS))?;

    header.type_of_loader = LOADER_TYPE_UNDEFINED;
    header.cmd_line_ptr = LINUX_CMDLINE_ADDRESS as u32;
    if let Some(initrd) = initrd {
        let limit = u64::from(header.initrd_addr_max) + 1;
        let (address, size) = place_initrd(memory, name, initrd, kernel_end, limit)?;
        header.ramdisk_image = address as u32;
        header.ramdisk_size = size as u32;
    }

    let mut params = boot_params {
        hdr: header,
        // Where the ACPI tables start (vmm/builder.rs writes them once the devices are attached); the
        // kernel would also find the RSDP by searching the BIOS area.
        acpi_rsdp_addr: ACPI_RSDP_ADDRESS,
        ..Default::default()
    };
    let map = linux_memory_map(ram_size(memory));
    if map.len() > E820_MAX_ZEROPAGE {
        return Err(bad(format!("{} memory map entries do not fit", map.len())));
    }
    for (slot, &(addr, size, kind)) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr,
            size,
            r#type: kind.e820_type(),
        };
    }
    params.e820_entries = map.len() as u8;
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new(&params, GuestAddress(BOOT_INFO_ADDRESS)),
        memory,
    )?;

    Ok(EntryRegisters {
        entry: LINUX_KERNEL_ADDRESS + STARTUP_64_OFFSET,
        stack: INITIAL_STACK_TOP,
        rax: 0,
        rbx: 0,
        rsi: BOOT_INFO_ADDRESS,
    })
}
