//! Telling image formats apart by their content (not by file name).
//!
//! The order matters: a multiboot kernel is usually *also* an ELF file (GRUB loads it through its
//! program headers), and it expects the multiboot entry state, so the multiboot header wins. An
//! ELF64 with a PVH note is still `Elf64` here: the ELF loader finds the note (src/loader/elf.rs).

/// Where a multiboot v1 header may be: 32-bit aligned, within the first 8 KiB of the image.
pub const MULTIBOOT_SEARCH_LIMIT: usize = 8192;
/// The multiboot v1 header magic.
pub const MULTIBOOT_HEADER_MAGIC: u32 = 0x1bad_b002;

/// What kind of image a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Raw machine code, loaded as it is.
    Flat,
    /// A 32-bit ELF executable (magic `\x7fELF`, class 1).
    Elf32,
    /// A 64-bit ELF executable (class 2), possibly with a PVH entry note.
    Elf64,
    /// An ELF file of a class we do not know.
    ElfOther,
    /// A multiboot v1 kernel: header magic 0x1BADB002 with a valid checksum in the first 8 KiB.
    /// `header` is the header's offset in the image.
    Multiboot { header: usize },
    /// A Linux bzImage (`HdrS` at offset 0x202).
    BzImage,
}

impl ImageFormat {
    pub fn detect(image: &[u8]) -> ImageFormat {
        if let Some(header) = find_multiboot_header(image) {
            ImageFormat::Multiboot { header }
        } else if image.starts_with(b"\x7fELF") {
            match image.get(4) {
                Some(1) => ImageFormat::Elf32,
                Some(2) => ImageFormat::Elf64,
                _ => ImageFormat::ElfOther,
            }
        } else if image.get(0x202..0x206) == Some(b"HdrS") {
            ImageFormat::BzImage
        } else {
            ImageFormat::Flat
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Flat => "a flat binary",
            ImageFormat::Elf32 => "an ELF32 file",
            ImageFormat::Elf64 => "an ELF64 file",
            ImageFormat::ElfOther => "an ELF file of unknown class",
            ImageFormat::Multiboot { .. } => "a multiboot kernel",
            ImageFormat::BzImage => "a Linux bzImage",
        }
    }
}

/// The offset of a multiboot v1 header: the magic, then flags, then a checksum that makes the
/// three 32-bit words sum to zero.
fn find_multiboot_header(image: &[u8]) -> Option<usize> {
    let searched = &image[..image.len().min(MULTIBOOT_SEARCH_LIMIT)];
    (0..searched.len().saturating_sub(11))
        .step_by(4)
        .find(|&offset| {
            let word = |i: usize| {
                let at = offset + i * 4;
                u32::from_le_bytes(searched[at..at + 4].try_into().unwrap())
            };
            word(0) == MULTIBOOT_HEADER_MAGIC
                && word(0).wrapping_add(word(1)).wrapping_add(word(2)) == 0
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(ImageFormat::detect(&[0xf4]), ImageFormat::Flat);
        assert_eq!(ImageFormat::detect(b"\x7fELF\x01"), ImageFormat::Elf32);
        assert_eq!(ImageFormat::detect(b"\x7fELF\x02"), ImageFormat::Elf64);
        let mut multiboot = vec![0u8; 64];
        let flags = 2u32;
        let checksum = 0u32.wrapping_sub(MULTIBOOT_HEADER_MAGIC + flags);
        multiboot[16..20].copy_from_slice(&MULTIBOOT_HEADER_MAGIC.to_le_bytes());
        multiboot[20..24].copy_from_slice(&flags.to_le_bytes());
        multiboot[24..28].copy_from_slice(&checksum.to_le_bytes());
        assert_eq!(
            ImageFormat::detect(&multiboot),
            ImageFormat::Multiboot { header: 16 }
        );
        // The magic alone, without the checksum, is not a header.
        multiboot[24] ^= 1;
        assert_eq!(ImageFormat::detect(&multiboot), ImageFormat::Flat);
    }
}
