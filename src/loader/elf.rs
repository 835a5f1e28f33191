//! ELF executables: ELF32 starts in 32-bit protected mode at `e_entry`; ELF64 in long mode at
//! `e_entry`, or at its PVH entry point (32-bit, paging off) when it has a PVH note.
//!
//! Before anything is written to guest memory, the headers are checked here so that each problem
//! gets its own message: an ELF for another machine, a segment outside guest RAM, a segment over
//! the VMM's own tables. Loading an ELF64 (and finding its PVH note) is linux-loader's
//! `Elf::load`; linux-loader reads only ELF64, so ELF32 segments are copied here.

use std::io::Cursor;

use linux_loader::loader::KernelLoader;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{LoaderError, check_load_range};

const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
const PT_LOAD: u32 = 1;

/// A loadable segment, from a program header.
#[derive(Debug, Clone, Copy)]
struct Segment {
    file_offset: u64,
    file_size: u64,
    /// Where it goes: the physical address `p_paddr` (as linux-loader and GRUB use it).
    address: u64,
    memory_size: u64,
}

/// The parts of an ELF file the loader needs.
#[derive(Debug)]
pub struct ElfImage {
    pub is_64: bool,
    pub entry: u64,
    segments: Vec<Segment>,
}

/// "x86-64", "AArch64" ...: names for the `e_machine` values a user is likely to meet.
fn machine_name(machine: u16) -> String {
    let name = match machine {
        2 => "SPARC",
        3 => "x86 (i386)",
        8 => "MIPS",
        20 => "PowerPC",
        21 => "PowerPC 64",
        22 => "s390",
        40 => "ARM",
        62 => "x86-64",
        183 => "AArch64",
        243 => "RISC-V",
        258 => "LoongArch",
        _ => return format!("machine {machine}"),
    };
    format!("{name} (e_machine {machine})")
}

/// Little-endian field readers that fail instead of panicking on a short file.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes<const N: usize>(&self, at: u64) -> Option<[u8; N]> {
        let at = usize::try_from(at).ok()?;
        self.0.get(at..at.checked_add(N)?)?.try_into().ok()
    }
    fn u16(&self, at: u64) -> Option<u16> {
        self.bytes(at).map(u16::from_le_bytes)
    }
    fn u32(&self, at: u64) -> Option<u32> {
        self.bytes(at).map(u32::from_le_bytes)
    }
    fn u64(&self, at: u64) -> Option<u64> {
        self.bytes(at).map(u64::from_le_bytes)
    }
    /// A 32-bit field in ELF32, a 64-bit one in ELF64.
    fn word(&self, at: u64, is_64: bool) -> Option<u64> {
        if is_64 {
            self.u64(at)
        } else {
            self.u32(at).map(u64::from)
        }
    }
}

impl ElfImage {
    /// Reads and checks the ELF and program headers.
    pub fn parse(name: &str, image: &[u8]) -> Result<ElfImage, LoaderError> {
        let bad = |reason: &'static str| LoaderError::BadElf {
            name: name.to_string(),
            reason,
        };
        let file = Reader(image);
        let is_64 = match image.get(4) {
            Some(1) => false,
            Some(2) => true,
            _ => return Err(bad("its class (byte 4) is neither 1 (ELF32) nor 2 (ELF64)")),
        };
        if image.get(5) != Some(&1) {
            return Err(bad("it is big-endian; x86 is little-endian"));
        }
        let machine = file.u16(18).ok_or(bad("the ELF header is cut short"))?;
        let expected = if is_64 { EM_X86_64 } else { EM_386 };
        if machine != expected {
            return Err(LoaderError::ForeignElf {
                name: name.to_string(),
                class: if is_64 { 64 } else { 32 },
                machine: machine_name(machine),
            });
        }
        if file.u16(16) != Some(ET_EXEC) {
            return Err(bad(
                "it is not an executable (e_type is not ET_EXEC): link it with -static and without -pie",
            ));
        }
        // Field offsets differ between the classes (the ELF spec, "ELF Header").
        let (entry_at, phoff_at, phentsize_at, phnum_at) = if is_64 {
            (24, 32, 54, 56)
        } else {
            (24, 28, 42, 44)
        };
        let short = || bad("the ELF header is cut short");
        let entry = file.word(entry_at, is_64).ok_or_else(short)?;
        let phoff = file.word(phoff_at, is_64).ok_or_else(short)?;
        let phentsize = u64::from(file.u16(phentsize_at).ok_or_else(short)?);
        let phnum = file.u16(phnum_at).ok_or_else(short)?;
        if phentsize != if is_64 { 56 } else { 32 } {
            return Err(bad("its program header size is wrong for its class"));
        }

        let mut segments = Vec::new();
        for index in 0..u64::from(phnum) {
            let header = phoff + index * phentsize;
            let field = |offset32: u64, offset64: u64| {
                let at = header + if is_64 { offset64 } else { offset32 };
                file.word(at, is_64)
                    .ok_or(bad("a program header lies outside the file"))
            };
            let kind = file
                .u32(header)
                .ok_or(bad("a program header lies outside the file"))?;
            if kind != PT_LOAD {
                continue;
            }
            let segment = Segment {
                file_offset: field(4, 8)?,
                address: field(12, 24)?,
                file_size: field(16, 32)?,
                memory_size: field(20, 40)?,
            };
            let file_end = segment.file_offset.checked_add(segment.file_size);
            if file_end.is_none_or(|end| end > image.len() as u64) {
                return Err(bad("a segment's bytes lie outside the file"));
            }
            if segment.file_size > segment.memory_size {
                return Err(bad("a segment is larger in the file than in memory"));
            }
            if segment.memory_size > 0 {
                segments.push(segment);
            }
        }
        if segments.is_empty() {
            return Err(bad("it has no loadable segment"));
        }
        Ok(ElfImage {
            is_64,
            entry,
            segments,
        })
    }

    /// Checks that every segment fits in guest RAM and stays clear of the VMM's tables.
    pub fn check_placement(&self, name: &str, memory: &GuestMemoryMmap) -> Result<(), LoaderError> {
        for segment in &self.segments {
            check_load_range(name, memory, segment.address, segment.memory_size)?;
        }
        Ok(())
    }

    /// Copies the segments into guest memory (already checked by `check_placement`). For an
    /// ELF64, returns its PVH entry point if it has one.
    pub fn load(&self, image: &[u8], memory: &GuestMemoryMmap) -> Result<Option<u64>, LoaderError> {
        if self.is_64 {
            let loaded = Elf::load(memory, None, &mut Cursor::new(image), None)?;
            return Ok(match loaded.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(entry) => Some(entry.0),
                _ => None,
            });
        }
        for segment in &self.segments {
            let start = segment.file_offset as usize;
            let bytes = &image[start..start + segment.file_size as usize];
            memory.write_slice(bytes, GuestAddress(segment.address))?;
            // The rest (.bss) is zero: guest RAM starts zeroed, but say so explicitly.
            let bss = (segment.memory_size - segment.file_size) as usize;
            memory.write_slice(
                &vec![0u8; bss],
                GuestAddress(segment.address + segment.file_size),
            )?;
        }
        Ok(None)
    }
}

/// Is `address` inside guest RAM (where an entry point must be: our page tables identity-map RAM)?
pub fn entry_in_ram(memory: &GuestMemoryMmap, address: u64) -> bool {
    memory.address_in_range(GuestAddress(address))
}
