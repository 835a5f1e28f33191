//! Display devices (issue 15, in progress): VGA text mode's cursor register and the text
//! buffer's contents at the end of a run (`--screen-dump`). docs/display.md.

pub mod vga_text;
