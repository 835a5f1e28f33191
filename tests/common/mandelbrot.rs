//! The picture guests/protected/mandelbrot.S must draw, computed here the way its source says:
//! the tests' oracle for its screenshot and for the `--display` view of it.

pub const WIDTH: u32 = 320;
pub const HEIGHT: u32 = 240;

/// The steps z = z² + c takes to escape |z|² > 4: fixed point with 12 fraction bits, at most
/// 24 steps (24: inside the set).
fn escape_time(c_real: i32, c_imaginary: i32) -> usize {
    let (mut real, mut imaginary) = (0i32, 0i32);
    for step in 0..24 {
        let real_squared = real.wrapping_mul(real) >> 12;
        let imaginary_squared = imaginary.wrapping_mul(imaginary) >> 12;
        if real_squared + imaginary_squared > 4 << 12 {
            return step;
        }
        imaginary = (real.wrapping_mul(imaginary) >> 11) + c_imaginary;
        real = real_squared - imaginary_squared + c_real;
    }
    24
}

/// Pixel (x, y) as (red, green, blue): 160x120 points from (-2.25, -1.125) in steps of 77/4096,
/// each 2x2 pixels, coloured from the guest's 16-colour palette, black inside the set.
pub fn pixel(x: u32, y: u32) -> (u8, u8, u8) {
    const PALETTE: [u32; 16] = [
        0x000764, 0x062a8c, 0x1052b4, 0x2079d4, 0x46a0e6, 0x86c8f2, 0xcfeefa, 0xffffff, 0xfff0b4,
        0xffd870, 0xffb43c, 0xf08c14, 0xc86400, 0x8c4000, 0x502000, 0x200c28,
    ];
    let steps = escape_time(-9216 + (x / 2) as i32 * 77, -4608 + (y / 2) as i32 * 77);
    let colour = if steps == 24 { 0 } else { PALETTE[steps % 16] };
    ((colour >> 16) as u8, (colour >> 8) as u8, colour as u8)
}
