//! Reading the PNG files mini-kvm writes (`--screenshot`, Ctrl-S) with an independent reader:
//! Python's zlib.

use std::path::Path;
use std::process::Command;

/// Reads a PNG with Python's zlib, checking every chunk's CRC: (width, height, RGB bytes). Only
/// what our encoder writes is accepted (8-bit RGB, filter 0 on every row).
pub fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
    const SCRIPT: &str = r#"
import struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
at, idat, kinds = 8, b'', []
while at < len(data):
    length, kind = struct.unpack('>I4s', data[at:at + 8])
    body = data[at + 8:at + 8 + length]
    (crc,) = struct.unpack('>I', data[at + 8 + length:at + 12 + length])
    assert zlib.crc32(kind + body) == crc, 'bad CRC in %r' % kind
    kinds.append(kind)
    if kind == b'IHDR':
        width, height, depth, colour = struct.unpack('>IIBB', body[:10])
    if kind == b'IDAT':
        idat += body
    at += 12 + length
assert kinds[0] == b'IHDR' and kinds[-1] == b'IEND', kinds
assert (depth, colour) == (8, 2), (depth, colour)
raw = zlib.decompress(idat)
stride = width * 3 + 1
assert len(raw) == stride * height
pixels = bytearray()
for y in range(height):
    assert raw[y * stride] == 0, 'filter'
    pixels += raw[y * stride + 1:(y + 1) * stride]
sys.stdout.buffer.write(b'%d %d\n' % (width, height) + bytes(pixels))
"#;
    let output = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(path)
        .output()
        .expect("these tests decode PNG files with python3: install it (Debian: python3)");
    assert!(
        output.status.success(),
        "python3 could not decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let newline = output.stdout.iter().position(|&b| b == b'\n').unwrap();
    let header = String::from_utf8_lossy(&output.stdout[..newline]).into_owned();
    let (width, height) = header.split_once(' ').unwrap();
    (
        width.parse().unwrap(),
        height.parse().unwrap(),
        output.stdout[newline + 1..].to_vec(),
    )
}
