//! Multiboot v1 kernels (the GNU Multiboot Specification 0.6.96): 32-bit protected mode, paging
//! off, EAX = 0x2BADB002, EBX = the physical address of a multiboot information structure with
//! the memory sizes, a memory map, the command line and the boot loader's name.
//!
//! The kernel is loaded through its ELF program headers, or, when its header sets flag 16 (the
//! "a.out kludge"), at the addresses the header itself gives, which is how a flat binary can be
//! a multiboot kernel.
//!
//! A kernel that sets header flag 2 and asks for a linear framebuffer (mode type 0) gets one when
//! the guest has a display: the information's framebuffer fields (flag 12) say where it is and
//! how its pixels are laid out (docs/display.md).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::elf::{ElfImage, entry_in_ram};
use super::{
    BOOT_CMDLINE_OFFSET, BOOT_LOADER_NAME, BOOT_LOADER_NAME_OFFSET, BOOT_MEMORY_MAP_OFFSET,
    LoaderError, check_load_range, write_cmdline,
};
use crate::arch::x86::layout::{
    BOOT_INFO_ADDRESS, FRAMEBUFFER_ADDRESS, INITIAL_STACK_TOP, VGA_TEXT_WINDOW, low_ram_end,
    memory_map,
};
use crate::arch::x86::modes::EntryRegisters;

/// What the boot loader puts in EAX, so the kernel knows it was booted by a multiboot loader.
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;

/// Header flags (the kernel's requests). Bits 0-15 are requirements: a loader that cannot meet
/// one must refuse the kernel.
const FLAG_PAGE_ALIGN_MODULES: u32 = 1 << 0;
const FLAG_MEMORY_INFO: u32 = 1 << 1;
const FLAG_VIDEO_MODE: u32 = 1 << 2;
const FLAG_ADDRESSES: u32 = 1 << 16;

/// Info flags (what the loader provides).
const INFO_MEMORY: u32 = 1 << 0;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MEMORY_MAP: u32 = 1 << 6;
const INFO_LOADER_NAME: u32 = 1 << 9;
const INFO_FRAMEBUFFER: u32 = 1 << 12;

/// The graphics mode mini-kvm gives a kernel that asks for a linear framebuffer and leaves a
/// field at 0 ("no preference").
const DEFAULT_VIDEO: VideoMode = VideoMode {
    width: 640,
    height: 480,
    bits_per_pixel: 32,
};
/// The largest mode the display adapter has (src/devices/display/vbe.rs).
const MAX_VIDEO: (u16, u16) = (1920, 1200);

/// The screen the multiboot information describes (with a display).
#[derive(Debug, Clone, Copy)]
enum Screen {
    /// The graphics mode the kernel asked for.
    Linear(VideoMode),
    /// The VGA text screen, for a kernel that did not ask for graphics.
    EgaText,
}

/// The linear-framebuffer mode a kernel gets: the display adapter is switched to it before the
/// kernel starts, and the multiboot information describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoMode {
    pub width: u16,
    pub height: u16,
    /// 16, 24 or 32.
    pub bits_per_pixel: u16,
}

impl VideoMode {
    /// The mode for a header's `width`, `height` and `depth` fields: each 0 takes the default, a
    /// size is capped at the adapter's largest, and a depth it cannot show becomes 32 (the
    /// specification lets the loader choose another mode; the information says which).
    fn for_request(width: u32, height: u32, depth: u32) -> VideoMode {
        let pick = |asked: u32, default: u16, max: u16| match asked {
            0 => default,
            asked => asked.min(u32::from(max)) as u16,
        };
        VideoMode {
            width: pick(width, DEFAULT_VIDEO.width, MAX_VIDEO.0),
            height: pick(height, DEFAULT_VIDEO.height, MAX_VIDEO.1),
            bits_per_pixel: match depth {
                16 | 24 | 32 => depth as u16,
                _ => DEFAULT_VIDEO.bits_per_pixel,
            },
        }
    }

    /// Bytes per line.
    pub fn pitch(&self) -> u32 {
        u32::from(self.width) * u32::from(self.bits_per_pixel) / 8
    }
}

fn word(image: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?))
}

/// Loads a multiboot kernel whose header is at `header` in `image`, writes the multiboot
/// information, and returns the entry registers.
pub fn load(
    name: &str,
    image: &[u8],
    header: usize,
    memory: &GuestMemoryMmap,
    cmdline: &str,
    display: bool,
) -> Result<(EntryRegisters, Option<VideoMode>), LoaderError> {
    let unsupported = |what: &'static str| LoaderError::MultibootUnsupported {
        name: name.to_string(),
        what,
    };
    // `detect` found magic, flags and checksum, so these three words exist.
    let flags = word(image, header + 4).ok_or(unsupported("its header is cut short"))?;
    let video = if flags & FLAG_VIDEO_MODE != 0 {
        if !display {
            return Err(unsupported(
                "it asks for a video mode (header flag 2): run it with a display (--display, \
                 --screenshot FILE or --screen-dump FILE)",
            ));
        }
        // mode_type, width, height, depth: words 8-11 of the header. Mode type 1 is EGA text,
        // which the kernel has anyway at 0xb8000; 0 asks for a linear framebuffer.
        let field = |index: usize| word(image, header + 4 * index).unwrap_or(0);
        (field(8) == 0).then(|| VideoMode::for_request(field(9), field(10), field(11)))
    } else {
        None
    };
    let known = FLAG_PAGE_ALIGN_MODULES | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE;
    if flags & 0xffff & !known != 0 {
        return Err(unsupported(
            "it requires a feature this loader does not know (header flags 3-15)",
        ));
    }

    let entry = if flags & FLAG_ADDRESSES != 0 {
        load_by_header_addresses(name, image, header, memory)?
    } else {
        if !image.starts_with(b"\x7fELF") {
            return Err(unsupported(
                "it has no address fields (header flag 16) and is not an ELF file, so there is no \
                 saying where it goes",
            ));
        }
        let elf = ElfImage::parse(name, image)?;
        if elf.is_64 {
            return Err(unsupported(
                "it is an ELF64 file without the address fields (flag 16); multiboot v1 kernels are 32-bit",
            ));
        }
        elf.check_placement(name, memory)?;
        elf.load(image, memory)?;
        elf.entry
    };
    if !entry_in_ram(memory, entry) {
        return Err(LoaderError::EntryOutsideMemory {
            name: name.to_string(),
            entry,
        });
    }

    // With a display, a kernel that did not ask for graphics learns of the text screen, as GRUB
    // tells it.
    let screen = match (video, display) {
        (Some(video), _) => Some(Screen::Linear(video)),
        (None, true) => Some(Screen::EgaText),
        (None, false) => None,
    };
    write_info(memory, cmdline, screen)?;
    let registers = EntryRegisters {
        entry,
        stack: INITIAL_STACK_TOP,
        rax: u64::from(BOOTLOADER_MAGIC),
        rbx: BOOT_INFO_ADDRESS,
        rsi: 0,
    };
    Ok((registers, video))
}

/// The a.out kludge: the header says where its own bytes go (`header_addr`), which part of the
/// file to load (`load_addr`..`load_end_addr`), how much zeroed memory follows (`bss_end_addr`)
/// and where to start (`entry_addr`).
fn load_by_header_addresses(
    name: &str,
    image: &[u8],
    header: usize,
    memory: &GuestMemoryMmap,
) -> Result<u64, LoaderError> {
    let bad = |what: &'static str| LoaderError::MultibootUnsupported {
        name: name.to_string(),
        what,
    };
    let field =
        |index: usize| word(image, header + 12 + index * 4).ok_or(bad("its header is cut short"));
    let (header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr) =
        (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    // The file offset that goes to load_addr: the header's offset minus its distance from it.
    let distance = header_addr
        .checked_sub(load_addr)
        .ok_or(bad("its header_addr is below its load_addr"))? as usize;
    let file_start = header
        .checked_sub(distance)
        .ok_or(bad("its load_addr lies before the start of the file"))?;
    let load_size = if load_end_addr == 0 {
        image.len() - file_start
    } else {
        (load_end_addr
            .checked_sub(load_addr)
            .ok_or(bad("load_end_addr is below load_addr"))? as usize)
            .min(image.len() - file_start)
    };
    let end = if bss_end_addr == 0 {
        u64::from(load_addr) + load_size as u64
    } else {
        u64::from(bss_end_addr).max(u64::from(load_addr) + load_size as u64)
    };
    check_load_range(
        name,
        memory,
        u64::from(load_addr),
        end - u64::from(load_addr),
    )?;
    memory.write_slice(
        &image[file_start..file_start + load_size],
        GuestAddress(u64::from(load_addr)),
    )?;
    Ok(u64::from(entry_addr))
}

/// Writes the multiboot information structure, its memory map, the boot loader's name and the
/// command line into the boot-information page (docs/memory-map.md); and with a display, the
/// screen.
fn write_info(
    memory: &GuestMemoryMmap,
    cmdline: &str,
    screen: Option<Screen>,
) -> Result<(), LoaderError> {
    let ram_size = super::ram_size(memory);
    let mut map = Vec::new();
    for (start, length, kind) in memory_map(ram_size) {
        map.extend_from_slice(&20u32.to_le_bytes()); // size of the rest of this entry
        map.extend_from_slice(&start.to_le_bytes());
        map.extend_from_slice(&length.to_le_bytes());
        map.extend_from_slice(&kind.e820_type().to_le_bytes());
    }
    let cmdline_address = write_cmdline(memory, cmdline)?;
    let loader_name_address = BOOT_INFO_ADDRESS + BOOT_LOADER_NAME_OFFSET;
    memory.write_slice(BOOT_LOADER_NAME, GuestAddress(loader_name_address))?;
    let map_address = BOOT_INFO_ADDRESS + BOOT_MEMORY_MAP_OFFSET;
    memory.write_slice(&map, GuestAddress(map_address))?;
    debug_assert!(BOOT_MEMORY_MAP_OFFSET + map.len() as u64 <= BOOT_LOADER_NAME_OFFSET);
    debug_assert!(BOOT_LOADER_NAME_OFFSET + BOOT_LOADER_NAME.len() as u64 <= BOOT_CMDLINE_OFFSET);

    // KiB of RAM from 0 up to 640 KiB ("lower") and from 1 MiB up to the first hole ("upper"),
    // as a PC BIOS reports.
    let lower_kib = ram_size.min(640 << 10) >> 10;
    let upper_kib = low_ram_end(ram_size).saturating_sub(1 << 20) >> 10;
    // The fields up to the framebuffer's colour layout: 29 words (116 bytes).
    let mut info = [0u32; 29];
    info[0] = INFO_MEMORY | INFO_CMDLINE | INFO_MEMORY_MAP | INFO_LOADER_NAME;
    info[1] = lower_kib as u32;
    info[2] = upper_kib.min(u64::from(u32::MAX)) as u32;
    info[4] = cmdline_address as u32;
    info[11] = map.len() as u32; // mmap_length
    info[12] = map_address as u32; // mmap_addr
    info[16] = loader_name_address as u32;
    // The framebuffer fields: address (a 64-bit field, high word 0), pitch, width, height,
    // then bytes: bits per pixel, type (1 direct RGB, 2 EGA text), and for RGB each colour's
    // bit position and size: 5:6:5 at 16 bits, blue in the lowest byte at 24 and 32.
    let framebuffer = match screen {
        Some(Screen::Linear(video)) => {
            let colours: [u8; 6] = match video.bits_per_pixel {
                16 => [11, 5, 5, 6, 0, 5],
                _ => [16, 8, 8, 8, 0, 8],
            };
            let (width, height) = (u32::from(video.width), u32::from(video.height));
            let depth = video.bits_per_pixel as u8;
            Some((
                FRAMEBUFFER_ADDRESS,
                video.pitch(),
                width,
                height,
                depth,
                1,
                colours,
            ))
        }
        Some(Screen::EgaText) => Some((VGA_TEXT_WINDOW, 160, 80, 25, 16, 2, [0; 6])),
        None => None,
    };
    if let Some((address, pitch, width, height, ..)) = framebuffer {
        info[0] |= INFO_FRAMEBUFFER;
        info[22] = address as u32;
        info[24] = pitch;
        info[25] = width;
        info[26] = height;
    }
    let mut bytes: Vec<u8> = info.iter().flat_map(|w| w.to_le_bytes()).collect();
    if let Some((.., depth, kind, colours)) = framebuffer {
        bytes[108] = depth;
        bytes[109] = kind;
        bytes[110..116].copy_from_slice(&colours);
    }
    memory.write_slice(&bytes, GuestAddress(BOOT_INFO_ADDRESS))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::detect::MULTIBOOT_HEADER_MAGIC;

    const MIB: u64 = 1 << 20;

    /// A multiboot kernel loaded by its header's addresses (flag 16): the header at file offset
    /// 0 and load address 1 MiB, 16 bytes of code after it, entry just after the header.
    fn kernel(flags: u32) -> Vec<u8> {
        let header_addr = MIB as u32;
        let words = [
            MULTIBOOT_HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(MULTIBOOT_HEADER_MAGIC.wrapping_add(flags)),
            header_addr,          // header_addr
            header_addr,          // load_addr
            0,                    // load_end_addr: the whole file
            header_addr + 0x1000, // bss_end_addr
            header_addr + 32,     // entry_addr
        ];
        let mut image: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        image.extend_from_slice(&[0xf4; 16]);
        image
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (4 * MIB) as usize)]).unwrap()
    }

    fn refusal(image: &[u8]) -> String {
        match load("k", image, 0, &memory(), "", false) {
            Ok(_) => "accepted".to_string(),
            Err(LoaderError::MultibootUnsupported { what, .. }) => what.to_string(),
            Err(other) => other.to_string(),
        }
    }

    #[test]
    fn a_kernel_with_header_addresses_is_loaded_where_it_asks() {
        let memory = memory();
        let image = kernel(FLAG_ADDRESSES | FLAG_MEMORY_INFO);
        let (registers, video) = load("k", &image, 0, &memory, "quiet", false).unwrap();
        assert_eq!(video, None);
        assert_eq!(registers.entry, MIB + 32);
        assert_eq!(registers.rax, u64::from(BOOTLOADER_MAGIC));
        assert_eq!(registers.rbx, BOOT_INFO_ADDRESS);
        let mut loaded = vec![0u8; image.len()];
        memory.read_slice(&mut loaded, GuestAddress(MIB)).unwrap();
        assert_eq!(loaded, image);
    }

    /// A kernel whose header asks for a linear framebuffer of `width` x `height` x `depth`.
    fn kernel_asking_for(width: u32, height: u32, depth: u32) -> Vec<u8> {
        let mut image = kernel(FLAG_ADDRESSES | FLAG_VIDEO_MODE);
        for (index, value) in [0, width, height, depth].into_iter().enumerate() {
            let at = 32 + 4 * index;
            image[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
        image
    }

    fn info_bytes(memory: &GuestMemoryMmap) -> [u8; 116] {
        let mut info = [0u8; 116];
        memory
            .read_slice(&mut info, GuestAddress(BOOT_INFO_ADDRESS))
            .unwrap();
        info
    }

    #[test]
    fn a_kernel_asking_for_a_framebuffer_is_told_where_it_is() {
        let memory = memory();
        let image = kernel_asking_for(320, 240, 32);
        let (_, video) = load("k", &image, 0, &memory, "", true).unwrap();
        let expected = VideoMode {
            width: 320,
            height: 240,
            bits_per_pixel: 32,
        };
        assert_eq!(video, Some(expected));
        let info = info_bytes(&memory);
        let word = |at: usize| u32::from_le_bytes(info[at..at + 4].try_into().unwrap());
        assert_ne!(word(0) & INFO_FRAMEBUFFER, 0);
        assert_eq!(word(88), 0xe000_0000);
        assert_eq!(word(92), 0);
        assert_eq!((word(96), word(100), word(104)), (1280, 320, 240));
        assert_eq!(&info[108..116], &[32, 1, 16, 8, 8, 8, 0, 8]);

        // No preference: 640x480x32. Too large, and an 8-bit depth: capped, and 32 bits.
        let (_, video) = load("k", &kernel_asking_for(0, 0, 0), 0, &memory, "", true).unwrap();
        assert_eq!(
            video.map(|v| (v.width, v.height, v.bits_per_pixel)),
            Some((640, 480, 32))
        );
        let (_, video) =
            load("k", &kernel_asking_for(4000, 3000, 8), 0, &memory, "", true).unwrap();
        assert_eq!(
            video.map(|v| (v.width, v.height, v.bits_per_pixel)),
            Some((1920, 1200, 32))
        );
        // 16 bits: 5:6:5.
        load("k", &kernel_asking_for(64, 64, 16), 0, &memory, "", true).unwrap();
        assert_eq!(&info_bytes(&memory)[108..116], &[16, 1, 11, 5, 5, 6, 0, 5]);
    }

    #[test]
    fn with_a_display_every_kernel_learns_of_the_text_screen() {
        let memory = memory();
        let (_, video) = load("k", &kernel(FLAG_ADDRESSES), 0, &memory, "", true).unwrap();
        assert_eq!(video, None);
        let info = info_bytes(&memory);
        let word = |at: usize| u32::from_le_bytes(info[at..at + 4].try_into().unwrap());
        assert_ne!(word(0) & INFO_FRAMEBUFFER, 0);
        assert_eq!(
            (word(88), word(96), word(100), word(104)),
            (0xb8000, 160, 80, 25)
        );
        assert_eq!(&info[108..110], &[16, 2]);
        // Without one: no framebuffer fields.
        load("k", &kernel(FLAG_ADDRESSES), 0, &memory, "", false).unwrap();
        assert_eq!(word_at(&info_bytes(&memory), 0) & INFO_FRAMEBUFFER, 0);
    }

    fn word_at(info: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(info[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn header_flags_and_fields_are_checked() {
        assert_eq!(
            refusal(&kernel(FLAG_ADDRESSES | FLAG_VIDEO_MODE)),
            "it asks for a video mode (header flag 2): run it with a display (--display, \
             --screenshot FILE or --screen-dump FILE)"
        );
        assert_eq!(
            refusal(&kernel(FLAG_ADDRESSES | 1 << 3)),
            "it requires a feature this loader does not know (header flags 3-15)"
        );
        let mut image = kernel(FLAG_ADDRESSES);
        image[16..20].copy_from_slice(&(MIB as u32 + 64).to_le_bytes()); // load_addr > header_addr
        assert_eq!(refusal(&image), "its header_addr is below its load_addr");
        let mut image = kernel(FLAG_ADDRESSES);
        image[12..16].copy_from_slice(&(MIB as u32 + 64).to_le_bytes()); // header 64 bytes in
        assert_eq!(
            refusal(&image),
            "its load_addr lies before the start of the file"
        );
        let mut image = kernel(FLAG_ADDRESSES);
        image[20..24].copy_from_slice(&(MIB as u32 - 4).to_le_bytes()); // load_end_addr
        assert_eq!(refusal(&image), "load_end_addr is below load_addr");
        let mut image = kernel(FLAG_ADDRESSES);
        image[28..32].copy_from_slice(&(64 * MIB as u32).to_le_bytes()); // entry_addr
        assert!(refusal(&image).contains("entry"), "{}", refusal(&image));
        assert_eq!(
            refusal(&kernel(FLAG_ADDRESSES)[..24]),
            "its header is cut short"
        );
        // Without flag 16 the file must be an ELF, and this one is not.
        assert_eq!(
            refusal(&kernel(0)),
            "it has no address fields (header flag 16) and is not an ELF file, so there is no \
             saying where it goes"
        );
    }
}
