//! Telling image formats apart by their content (not by file name).

/// What kind of image a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Raw machine code, loaded as it is.
    Flat,
    /// An ELF executable (magic `\x7fELF`).
    Elf,
    /// A Linux bzImage (`HdrS` at offset 0x202).
    BzImage,
}

impl ImageFormat {
    pub fn detect(image: &[u8]) -> ImageFormat {
        if image.starts_with(b"\x7fELF") {
            ImageFormat::Elf
        } else if image.get(0x202..0x206) == Some(b"HdrS") {
            ImageFormat::BzImage
        } else {
            ImageFormat::Flat
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Flat => "a flat binary",
            ImageFormat::Elf => "an ELF file",
            ImageFormat::BzImage => "a Linux bzImage",
        }
    }
}
