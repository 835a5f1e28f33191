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

    /// Where the loaded image ends: the end of its highest segment.
    pub fn end(&self) -> u64 {
        self.segments
            .iter()
            .map(|segment| segment.address + segment.memory_size)
            .max()
            .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal static ELF32: the 52-byte header, one PT_LOAD program header, 4 bytes of code
    /// loaded at 1 MiB (8 bytes in memory), entry at 1 MiB.
    fn elf32() -> Vec<u8> {
        let mut image = vec![0u8; 52 + 32 + 4];
        image[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 1, 1, 1]);
        let put16 = |image: &mut Vec<u8>, at: usize, v: u16| {
            image[at..at + 2].copy_from_slice(&v.to_le_bytes())
        };
        put16(&mut image, 16, ET_EXEC);
        put16(&mut image, 18, EM_386);
        put16(&mut image, 42, 32); // e_phentsize
        put16(&mut image, 44, 1); // e_phnum
        let put32 = |image: &mut Vec<u8>, at: usize, v: u32| {
            image[at..at + 4].copy_from_slice(&v.to_le_bytes())
        };
        put32(&mut image, 24, 0x10_0000); // e_entry
        put32(&mut image, 28, 52); // e_phoff
        put32(&mut image, 52, PT_LOAD);
        put32(&mut image, 52 + 4, 84); // p_offset
        put32(&mut image, 52 + 12, 0x10_0000); // p_paddr
        put32(&mut image, 52 + 16, 4); // p_filesz
        put32(&mut image, 52 + 20, 8); // p_memsz
        image[84..].copy_from_slice(&[0xf4, 0xf4, 0xf4, 0xf4]);
        image
    }

    fn reason_for(image: &[u8]) -> String {
        match ElfImage::parse("t.elf", image) {
            Ok(_) => "accepted".to_string(),
            Err(LoaderError::BadElf { reason, .. }) => reason.to_string(),
            Err(other) => other.to_string(),
        }
    }

    #[test]
    fn a_minimal_elf32_parses() {
        let elf = ElfImage::parse("t.elf", &elf32()).unwrap();
        assert!(!elf.is_64);
        assert_eq!(elf.entry, 0x10_0000);
        assert_eq!(elf.segments.len(), 1);
        assert_eq!(elf.segments[0].address, 0x10_0000);
        assert_eq!(elf.segments[0].memory_size, 8);
    }

    #[test]
    fn each_header_field_is_checked() {
        let mutated = |at: usize, bytes: &[u8]| {
            let mut image = elf32();
            image[at..at + bytes.len()].copy_from_slice(bytes);
            reason_for(&image)
        };
        assert_eq!(
            mutated(4, &[3]),
            "its class (byte 4) is neither 1 (ELF32) nor 2 (ELF64)"
        );
        assert_eq!(mutated(5, &[2]), "it is big-endian; x86 is little-endian");
        let mut foreign = elf32();
        foreign[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64 in an ELF32
        assert!(matches!(
            ElfImage::parse("t.elf", &foreign),
            Err(LoaderError::ForeignElf { class: 32, ref machine, .. }) if *machine == machine_name(62)
        ));
        assert_eq!(
            mutated(16, &3u16.to_le_bytes()),
            "it is not an executable (e_type is not ET_EXEC): link it with -static and without -pie"
        );
        assert_eq!(
            mutated(42, &40u16.to_le_bytes()),
            "its program header size is wrong for its class"
        );
        assert_eq!(
            mutated(28, &4000u32.to_le_bytes()),
            "a program header lies outside the file"
        );
        assert_eq!(
            mutated(52 + 16, &5u32.to_le_bytes()),
            "a segment's bytes lie outside the file"
        );
        assert_eq!(
            mutated(52 + 20, &2u32.to_le_bytes()),
            "a segment is larger in the file than in memory"
        );
        assert_eq!(
            mutated(52, &4u32.to_le_bytes()),
            "it has no loadable segment"
        );
        assert_eq!(reason_for(&elf32()[..20]), "the ELF header is cut short");
    }
}
