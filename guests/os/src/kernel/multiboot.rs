//! The multiboot information the loader left for us (EBX at entry): RAM regions, the command
//! line, and the text screen when there is a display. Read once, at boot, before anything can overwrite it.

/// The multiboot information's flags (which fields are valid).
const HAS_CMDLINE: u32 = 1 << 2;
const HAS_MEMORY_MAP: u32 = 1 << 6;
const HAS_FRAMEBUFFER: u32 = 1 << 12;
/// The framebuffer type of a text screen ("EGA text": character and attribute cells).
const FRAMEBUFFER_EGA_TEXT: u8 = 2;
/// A memory map entry of this type is RAM we may use.
const RAM: u32 = 1;

pub const MAX_REGIONS: usize = 8;

pub struct BootInfo {
    /// Usable RAM: (start, end) physical addresses.
    pub regions: [(u64, u64); MAX_REGIONS],
    pub region_count: usize,
    /// The end of the highest RAM region.
    pub ram_end: u64,
    /// `--cmdline` words we know.
    pub verbose: bool,
    pub kernel_fault: bool,
    /// With a display: the text screen's address (vga.rs).
    pub text_screen: Option<u64>,
}

fn read_u32(address: u64) -> u32 {
    // SAFETY: the loader put the structure here, in identity-mapped low memory.
    unsafe { core::ptr::read_unaligned(address as *const u32) }
}

fn read_u64(address: u64) -> u64 {
    unsafe { core::ptr::read_unaligned(address as *const u64) }
}

pub fn read(info: u64) -> BootInfo {
    let mut boot = BootInfo {
        regions: [(0, 0); MAX_REGIONS],
        region_count: 0,
        ram_end: 0,
        verbose: false,
        kernel_fault: false,
        text_screen: None,
    };
    let flags = read_u32(info);
    if flags & HAS_MEMORY_MAP != 0 {
        let (length, address) = (read_u32(info + 44), read_u32(info + 48));
        let mut entry = u64::from(address);
        let end = entry + u64::from(length);
        // Each entry: size (of the rest), base, length, type.
        while entry < end && boot.region_count < MAX_REGIONS {
            let size = read_u32(entry);
            let (base, len, kind) = (
                read_u64(entry + 4),
                read_u64(entry + 12),
                read_u32(entry + 20),
            );
            if kind == RAM && len > 0 {
                boot.regions[boot.region_count] = (base, base + len);
                boot.region_count += 1;
                boot.ram_end = boot.ram_end.max(base + len);
            }
            entry += u64::from(size) + 4;
        }
    }
    // SAFETY (the byte read): inside the information structure, as flag 12 says.
    if flags & HAS_FRAMEBUFFER != 0
        && unsafe { *((info + 109) as *const u8) } == FRAMEBUFFER_EGA_TEXT
    {
        boot.text_screen = Some(read_u64(info + 88));
    }
    if flags & HAS_CMDLINE != 0 {
        let mut address = u64::from(read_u32(info + 16));
        // Words separated by spaces, up to the NUL.
        let mut word = [0u8; 32];
        let mut len = 0;
        loop {
            // SAFETY: a NUL-terminated string the loader wrote.
            let byte = unsafe { *(address as *const u8) };
            if byte == b' ' || byte == 0 {
                match &word[..len] {
                    b"verbose" => boot.verbose = true,
                    b"kernel-fault" => boot.kernel_fault = true,
                    _ => {}
                }
                len = 0;
                if byte == 0 {
                    break;
                }
            } else if len < word.len() {
                word[len] = byte;
                len += 1;
            }
            address += 1;
        }
    }
    boot
}
