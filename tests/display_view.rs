//! The live display view (`--display`) in a real terminal: tmux runs it and `capture-pane -e`
//! reads back every cell with its colours. The text demo's screen is compared cell by cell
//! (characters, foreground, background, the cursor); the graphics demo's half-block picture is
//! compared with the Mandelbrot set scaled the way the view scales it; two guests sit side by
//! side.

mod common;

use common::png::decode_png;
use common::terminal::{Cell, Colour, TerminalSession};
use common::{mandelbrot, mini_kvm, vga_text};

/// The terminal colour the view gives each VGA colour (VGA counts blue as 1, terminals red).
const VGA_TO_TERMINAL: [u8; 16] = [0, 4, 2, 6, 1, 5, 3, 7, 8, 12, 10, 14, 9, 13, 11, 15];

#[test]
fn the_text_demo_shows_cell_by_cell_in_its_colours() {
    let session = TerminalSession::on_screen("display-text", "run --display vga_text", &[]);
    session.wait_for_screen(&[
        "[1:vga_text] exited 0 · 6 exits · VGA text 80x25",
        "vga_text: the screen is in the text buffer at 0xb8000",
        "all guests have ended",
    ]);
    let cells = session.cells();
    // Every cell of the 25 rows (the pane's border takes row 0 and column 0 of the terminal):
    // its character, its colours, and reverse video at the cursor alone, which the guest put at
    // row 5, column 0.
    for (row, expected) in vga_text::cells().iter().enumerate() {
        let shown = &cells[row + 1][1..81];
        for (column, (&(character, attribute), cell)) in expected.iter().zip(shown).enumerate() {
            let want = Cell {
                character: character as char,
                foreground: Colour::Indexed(VGA_TO_TERMINAL[usize::from(attribute & 0x0f)]),
                background: Colour::Indexed(VGA_TO_TERMINAL[usize::from(attribute >> 4)]),
                reversed: (row, column) == (5, 0),
            };
            assert_eq!(*cell, want, "row {row}, column {column}");
        }
    }
    // The output rule follows the 25th row.
    let rule: String = cells[26][1..10].iter().map(|cell| cell.character).collect();
    assert_eq!(rule, " output ─");

    session.send(&["C-q"]);
    session.wait_for_screen(&["STATUS=0"]);
    session.assert_terminal_restored();
}

/// Pixel (x, y) of the picture scaled to `width` x `height`: the mean of the pixels it covers.
fn scaled_pixel(x: u32, y: u32, width: u32, height: u32) -> Colour {
    let span = |at: u32, scaled: u32, size: u32| {
        let start = at * size / scaled;
        start..((at + 1) * size / scaled).max(start + 1).min(size)
    };
    let (mut sum, mut count) = ([0u32; 3], 0);
    for source_y in span(y, height, mandelbrot::HEIGHT) {
        for source_x in span(x, width, mandelbrot::WIDTH) {
            let (red, green, blue) = mandelbrot::pixel(source_x, source_y);
            sum[0] += u32::from(red);
            sum[1] += u32::from(green);
            sum[2] += u32::from(blue);
            count += 1;
        }
    }
    Colour::Rgb(
        (sum[0] / count) as u8,
        (sum[1] / count) as u8,
        (sum[2] / count) as u8,
    )
}

#[test]
fn two_guests_side_by_side_one_drawing_the_mandelbrot_set_in_half_blocks() {
    let session = TerminalSession::on_screen("display-two", "run --display mandelbrot hello", &[]);
    session.wait_for_screen(&[
        "[1:mandelbrot] exited 0 · 10 exits · 320x240 graphics",
        "[2:hello] exited 0 · 2 exits · VGA text 80x25",
        "mandelbrot: 160x120 points drawn at 320x240, 32 bits per p",
        "Hello, KVM!",
    ]);
    let cells = session.cells();
    // 120 columns: two panes of 60, each 58 cells inside its border. The picture keeps its
    // shape: 58 x 43 pixels, in 22 rows of half blocks (the last row's lower half is black).
    let (width, height) = (58, 43);
    for row in 0..22u32 {
        for column in 0..width {
            let cell = cells[row as usize + 1][column as usize + 1];
            let lower = if row * 2 + 1 < height {
                scaled_pixel(column, row * 2 + 1, width, height)
            } else {
                Colour::Rgb(0, 0, 0)
            };
            let want = Cell {
                character: '▀',
                foreground: scaled_pixel(column, row * 2, width, height),
                background: lower,
                reversed: false,
            };
            assert_eq!(cell, want, "row {row}, column {column}");
        }
    }
    // Below the picture, its output; hello's pane beside it shows a blank text screen (hello
    // never writes it) and its own output.
    let rule: String = cells[23][1..9].iter().map(|cell| cell.character).collect();
    assert_eq!(rule, " output ");
    session.send(&["C-q"]);
    let screen = session.wait_for_screen(&["STATUS=0"]);
    assert!(
        screen.contains("[1:mandelbrot]       0  exited 0"),
        "{screen}"
    );
    session.assert_terminal_restored();
}

#[test]
fn display_needs_a_terminal() {
    common::require_kvm();
    let run = mini_kvm(&["run", "--display", "vga_text"], b"");
    common::assert_error(
        &run,
        1,
        "mini-kvm: error: --display needs a terminal, and neither stdin nor stdout is a \
         terminal: run it in a terminal, or leave out --display\n",
    );
    let run = mini_kvm(&["run", "--display", "--raw", "vga_text"], b"");
    assert_eq!(run.status, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("error: the argument '--display' cannot be used with '--raw'"),
        "{run:?}"
    );
}

/// Does the VGA screen (rows 1-25 of the terminal, inside the pane's border) show `text`?
fn on_vga(session: &TerminalSession, text: &str) -> bool {
    session.cells().get(1..26).is_some_and(|rows| {
        rows.iter().any(|row| {
            let line: String = row
                .iter()
                .skip(1)
                .take(80)
                .map(|cell| cell.character)
                .collect();
            line.contains(text)
        })
    })
}

#[test]
fn the_teaching_os_shows_its_menu_on_the_vga_screen() {
    let session = TerminalSession::on_screen("display-os", "run --display os", &[]);
    // The menu on the VGA screen, not only in the output below it. (The OS writes the screen
    // just after its hypercall: the output may show a line a frame before the screen does.)
    for text in ["=== 1K OS Menu ===", "9. About 1K OS", "Select:"] {
        session.wait_for(&format!("{text:?} on the VGA screen"), |s| on_vga(s, text));
    }
    // Keys reach the OS; its goodbye is on the screen too, and final once the title says so.
    session.send(&["0", "Enter"]);
    session.wait_for_screen(&["[1:os] exited 0"]);
    assert!(
        on_vga(&session, "Thank you for using 1K OS!"),
        "{}",
        session.screen(false)
    );
    session.send(&["C-q"]);
    session.wait_for_screen(&["STATUS=0"]);
    session.assert_terminal_restored();
}

#[test]
fn ctrl_s_saves_the_screen_in_a_new_file_each_time() {
    let session = TerminalSession::on_screen("display-save", "run --display mandelbrot", &[]);
    session.wait_for_screen(&["[1:mandelbrot] exited 0", "Ctrl-S save the screen"]);
    session.send(&["C-s"]);
    session.wait_for_screen(&["saved mandelbrot-screen-1.png"]);
    session.send(&["C-s"]);
    session.wait_for_screen(&["saved mandelbrot-screen-2.png"]);
    let (width, height, rgb) = decode_png(&session.dir().join("mandelbrot-screen-1.png"));
    assert_eq!((width, height), (mandelbrot::WIDTH, mandelbrot::HEIGHT));
    for y in 0..height {
        for x in 0..width {
            let at = ((y * width + x) * 3) as usize;
            let pixel = (rgb[at], rgb[at + 1], rgb[at + 2]);
            assert_eq!(pixel, mandelbrot::pixel(x, y), "pixel ({x}, {y})");
        }
    }
    let first = std::fs::read(session.dir().join("mandelbrot-screen-1.png")).unwrap();
    let second = std::fs::read(session.dir().join("mandelbrot-screen-2.png")).unwrap();
    assert_eq!(first, second);
    session.send(&["C-q"]);
    session.wait_for_screen(&["STATUS=0"]);
    session.assert_terminal_restored();

    // A text screen is saved as text, in --screen-dump's format.
    let session = TerminalSession::on_screen("display-save-text", "run --display vga_text", &[]);
    session.wait_for_screen(&["[1:vga_text] exited 0"]);
    session.send(&["C-s"]);
    session.wait_for_screen(&["saved vga_text-screen-1.txt"]);
    assert_eq!(session.file("vga_text-screen-1.txt"), vga_text::dump());
    session.send(&["C-q"]);
    session.wait_for_screen(&["STATUS=0"]);
}

#[test]
fn the_view_replaces_a_screen_dump_file_at_the_end() {
    // With the view, the file is renamed over its target by the view's thread, under its
    // filter (docs/security.md): the old file goes, the new one is whole, nothing is left over.
    let session = TerminalSession::on_screen(
        "display-screen-dump",
        "run --display --screen-dump screen.txt vga_text",
        &[],
    );
    std::fs::write(session.dir().join("screen.txt"), b"an old screen").unwrap();
    session.wait_for_screen(&["[1:vga_text] exited 0"]);
    session.send(&["C-q"]);
    session.wait_for_screen(&["STATUS=0"]);
    assert_eq!(session.file("screen.txt"), vga_text::dump());
    let leftovers: Vec<_> = std::fs::read_dir(session.dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().contains("mini-kvm-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Decodes standard base64.
fn from_base64(text: &[u8]) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for group in text.chunks(4) {
        let digits: Vec<u8> = group
            .iter()
            .filter(|&&c| c != b'=')
            .map(|&c| value(c))
            .collect();
        let bits = digits
            .iter()
            .enumerate()
            .fold(0u32, |bits, (i, &d)| bits | u32::from(d) << (18 - 6 * i));
        out.extend_from_slice(&bits.to_be_bytes()[1..digits.len()]);
    }
    out
}

/// The last whole image in a stream of kitty graphics protocol commands (`ESC _ G keys ; data
/// ESC \`): its keys of the first chunk, and its pixels.
fn last_kitty_image(stream: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = String::from_utf8_lossy(stream);
    let mut image: Option<(String, Vec<u8>)> = None;
    let mut building: Option<(String, Vec<u8>)> = None;
    for command in text.split("\x1b_G").skip(1) {
        let Some(end) = command.find("\x1b\\") else {
            continue;
        };
        let (keys, data) = command[..end]
            .split_once(';')
            .unwrap_or((&command[..end], ""));
        if keys.contains("a=T") {
            building = Some((keys.to_string(), Vec::new()));
        }
        if let Some((_, payload)) = building.as_mut()
            && (keys.contains("a=T") || keys.starts_with("m="))
        {
            payload.extend_from_slice(data.as_bytes());
            if keys.contains("m=0") {
                let (keys, payload) = building.take().unwrap();
                image = Some((keys, from_base64(&payload)));
            }
        }
    }
    image
}

#[test]
fn a_terminal_with_the_kitty_graphics_protocol_gets_the_picture_itself() {
    // tmux does not show kitty images, but passes on what mini-kvm writes: recorded here and
    // decoded. KITTY_WINDOW_ID is how kitty tells programs they run in it.
    let session = TerminalSession::on_screen(
        "display-kitty",
        "run --display mandelbrot",
        &[("KITTY_WINDOW_ID", "1")],
    );
    session.record_output("raw");
    session.wait_for_screen(&["[1:mandelbrot] exited 0"]);
    // The last picture sent is the final screen: wait for a frame after the end.
    session.wait_for("the final picture", |s| {
        let raw = std::fs::read(s.dir().join("raw")).unwrap_or_default();
        last_kitty_image(&raw).is_some_and(|(_, rgb)| {
            (0..mandelbrot::WIDTH * mandelbrot::HEIGHT).all(|i| {
                let (x, y) = (i % mandelbrot::WIDTH, i / mandelbrot::WIDTH);
                let at = i as usize * 3;
                (rgb[at], rgb[at + 1], rgb[at + 2]) == mandelbrot::pixel(x, y)
            })
        })
    });
    let raw = std::fs::read(session.dir().join("raw")).unwrap();
    let (keys, _) = last_kitty_image(&raw).unwrap();
    // 320x240 RGB, as image 1, in the cells the picture takes in a 120x40 terminal: the pane
    // has 118 x 37 inside its border (the footer takes a row), the output 4 of those rows; 33
    // rows are 66 half-cell pixels high, and the picture keeps its shape in 88 columns.
    assert_eq!(keys, "a=T,i=1,f=24,s=320,v=240,c=88,r=33,C=1,q=2,m=1");
    // The cells under it are blank: no half blocks.
    assert!(!session.screen(false).contains('▀'));
    session.send(&["C-q"]);
    session.wait_for_screen(&["STATUS=0"]);
    session.assert_terminal_restored();
}
