//! The screen guests/real/vga_text.S must leave, built from what its source writes: the tests'
//! oracle for `--screen-dump`, the `--display` view and Ctrl-S.

/// The 25 rows of 80 cells: (character, attribute). Blanks are (' ', 0x07): the guest clears
/// the screen with light grey on black.
pub fn cells() -> Vec<Vec<(u8, u8)>> {
    let mut rows = vec![vec![(b' ', 0x07u8); 80]; 25];
    for (column, &character) in b"mini-kvm: VGA text mode".iter().enumerate() {
        rows[0][column] = (character, 0x1e);
    }
    for colour in 0..16u8 {
        rows[2][usize::from(colour)] = (b'A' + colour, colour);
    }
    for colour in 0..8u8 {
        rows[3][usize::from(colour)] = (b'a' + colour, (colour << 4) | 0x0f);
    }
    let line = b"Written straight into guest memory: no VM exit per character.";
    for (column, &character) in line.iter().enumerate() {
        rows[4][column] = (character, 0x0a);
    }
    rows
}

/// The whole screen in `--screen-dump`'s format, the cursor where the guest puts it (row 5).
pub fn dump() -> String {
    let rows = cells();
    let mut dump = String::from("VGA text 80x25, cursor at row 5, column 0\n");
    for row in &rows {
        let line: String = row
            .iter()
            .map(|&(character, _)| character as char)
            .collect();
        dump.push_str(line.trim_end());
        dump.push('\n');
    }
    dump.push_str("attributes:\n");
    for row in &rows {
        for (_, attribute) in row {
            dump.push_str(&format!("{attribute:02x}"));
        }
        dump.push('\n');
    }
    dump
}
