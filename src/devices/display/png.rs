//! PNG files of the screen (`--screenshot`): the smallest valid encoder, written out so that a
//! reader can see the whole format. A PNG is a signature and chunks (length, type, data, CRC-32):
//! `IHDR` (size, 8-bit RGB), `IDAT` (the pixel rows, each after a filter byte, in a zlib stream)
//! and `IEND`. The zlib stream here uses deflate's "stored" blocks: no compression, so no
//! Huffman coding to write, and any PNG reader decodes it.

/// The 8 bytes every PNG starts with.
const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
/// The most a stored deflate block holds.
const STORED_BLOCK_MAX: usize = 0xffff;

/// Encodes `width` × `height` pixels, `rgb` holding 3 bytes (red, green, blue) per pixel, row by
/// row from the top.
pub fn encode(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    assert_eq!(rgb.len(), width as usize * height as usize * 3);
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    // 8 bits per sample, colour type 2 (RGB), deflate, filter method 0, no interlace.
    header.extend_from_slice(&[8, 2, 0, 0, 0]);

    // Each row: filter type 0 ("none"), then its pixels.
    let row_bytes = width as usize * 3;
    let mut raw = Vec::with_capacity((row_bytes + 1) * height as usize);
    for row in rgb.chunks(row_bytes.max(1)).take(height as usize) {
        raw.push(0);
        raw.extend_from_slice(row);
    }

    let mut png = SIGNATURE.to_vec();
    write_chunk(&mut png, b"IHDR", &header);
    write_chunk(&mut png, b"IDAT", &zlib_stored(&raw));
    write_chunk(&mut png, b"IEND", &[]);
    png
}

fn write_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let crc_start = png.len();
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let crc = crc32(&png[crc_start..]);
    png.extend_from_slice(&crc.to_be_bytes());
}

/// A zlib stream of `data` in stored blocks: the header (deflate, 32 KiB window, no dictionary,
/// its check bits), the blocks, then the Adler-32 of `data`.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let mut blocks = data.chunks(STORED_BLOCK_MAX).peekable();
    if blocks.peek().is_none() {
        // An empty stream is still one (final, empty) block.
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        let last = blocks.peek().is_none();
        out.push(u8::from(last)); // BFINAL, and BTYPE 00: stored.
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

/// CRC-32 (the IEEE polynomial, reflected), bit by bit: screenshots are rare.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    b << 16 | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_their_standard_check_values() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn a_two_pixel_image_byte_for_byte() {
        let png = encode(2, 1, &[255, 0, 0, 0, 0, 255]);
        assert_eq!(&png[..8], &SIGNATURE);
        // IHDR: 13 bytes, 2 x 1, 8-bit RGB.
        assert_eq!(&png[8..16], b"\0\0\0\x0dIHDR");
        assert_eq!(&png[16..29], &[0, 0, 0, 2, 0, 0, 0, 1, 8, 2, 0, 0, 0]);
        // IDAT: zlib header, one final stored block of 7 bytes, the row, Adler-32.
        let idat = &png[33..];
        assert_eq!(&idat[..8], b"\0\0\0\x12IDAT");
        assert_eq!(
            &idat[8..26],
            &[
                0x78, 1, 1, 7, 0, 0xf8, 0xff, 0, 255, 0, 0, 0, 0, 255, 0x07, 0x00, 0x01, 0xff
            ]
        );
        assert!(png.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82]));
    }

    #[test]
    fn large_images_span_several_stored_blocks() {
        let rgb = vec![7u8; 200 * 200 * 3];
        let stream = zlib_stored(&rgb);
        // 120,000 bytes: a full block of 65,535, then a final shorter one.
        assert_eq!(stream.len(), 2 + 2 * 5 + rgb.len() + 4);
        assert_eq!(stream[2], 0);
        assert_eq!(stream[2 + 5 + STORED_BLOCK_MAX], 1);
    }
}
