//! The benchmark results: rows with their baseline and ratio, printed as a table, and written as
//! Markdown, JSON and an SVG bar chart of the ratios.

use std::fmt::Write as _;

use super::measure::Sample;

/// A figure that could not be measured says why ("not installed", "needs hardware KVM", ...).
pub type Figure = Result<Sample, String>;

/// What a row promises, checked against its ratio.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The ratio must be at most this.
    AtMost(f64),
    /// The ratio must be at least this.
    AtLeast(f64),
    /// The value itself must be below this (e.g. MiB of memory).
    ValueBelow(f64),
}

/// One measured quantity, with the baseline it is compared to in the same run.
pub struct Row {
    pub group: &'static str,
    pub name: String,
    pub unit: &'static str,
    pub value: Figure,
    pub baseline: Option<(String, Figure)>,
    pub target: Option<Target>,
}

impl Row {
    pub fn new(
        group: &'static str,
        name: impl Into<String>,
        unit: &'static str,
        value: Figure,
    ) -> Row {
        Row {
            group,
            name: name.into(),
            unit,
            value,
            baseline: None,
            target: None,
        }
    }

    pub fn against(mut self, name: impl Into<String>, baseline: Figure) -> Row {
        self.baseline = Some((name.into(), baseline));
        self
    }

    pub fn target(mut self, target: Target) -> Row {
        self.target = Some(target);
        self
    }

    /// value ÷ baseline, medians.
    pub fn ratio(&self) -> Option<f64> {
        let value = self.value.as_ref().ok()?;
        let (_, baseline) = self.baseline.as_ref()?;
        let baseline = baseline.as_ref().ok()?;
        (baseline.median > 0.0).then(|| value.median / baseline.median)
    }

    /// "met", "missed", or "" without a target or a figure.
    pub fn verdict(&self) -> &'static str {
        let met = match (self.target, self.ratio(), &self.value) {
            (Some(Target::AtMost(limit)), Some(ratio), _) => ratio <= limit,
            (Some(Target::AtLeast(limit)), Some(ratio), _) => ratio >= limit,
            (Some(Target::ValueBelow(limit)), _, Ok(value)) => value.median < limit,
            _ => return "",
        };
        if met { "met" } else { "missed" }
    }

    fn target_text(&self) -> String {
        match self.target {
            Some(Target::AtMost(limit)) => format!("ratio <= {limit}"),
            Some(Target::AtLeast(limit)) => format!("ratio >= {limit}"),
            Some(Target::ValueBelow(limit)) => format!("< {limit} {}", self.unit),
            None => String::new(),
        }
    }
}

/// Everything one `mini-kvm bench` printed.
pub struct Report {
    /// Lines about the host: KVM module, CPU, cores, versions.
    pub header: Vec<String>,
    pub rows: Vec<Row>,
}

fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else if value == 0.0 || value.abs() >= 0.01 {
        format!("{value:.3}")
    } else {
        // Small values (a guest reading at 1/5000 of the host's speed) keep three significant
        // digits: 0.000197, not 0.000.
        let decimals = (2 - value.abs().log10().floor() as i32).clamp(3, 12) as usize;
        format!("{value:.decimals$}")
    }
}

fn figure_cells(figure: &Figure) -> [String; 3] {
    match figure {
        Ok(sample) => [
            number(sample.median),
            number(sample.min),
            number(sample.max),
        ],
        Err(why) => [why.clone(), String::new(), String::new()],
    }
}

const COLUMNS: [&str; 9] = [
    "measurement",
    "median",
    "min",
    "max",
    "unit",
    "baseline (same run)",
    "baseline median",
    "ratio",
    "target",
];

impl Report {
    fn cells(&self) -> Vec<(&'static str, [String; 9])> {
        self.rows
            .iter()
            .map(|row| {
                let [median, min, max] = figure_cells(&row.value);
                let (baseline_name, baseline_median) = match &row.baseline {
                    Some((name, figure)) => (name.clone(), figure_cells(figure)[0].clone()),
                    None => (String::new(), String::new()),
                };
                let ratio = row
                    .ratio()
                    .map(|r| format!("{}x", number(r)))
                    .unwrap_or_default();
                let target = match (row.target_text(), row.verdict()) {
                    (text, "") => text,
                    (text, verdict) => format!("{text}: {verdict}"),
                };
                (
                    row.group,
                    [
                        row.name.clone(),
                        median,
                        min,
                        max,
                        row.unit.to_string(),
                        baseline_name,
                        baseline_median,
                        ratio,
                        target,
                    ],
                )
            })
            .collect()
    }

    /// The table for the terminal, grouped.
    pub fn table(&self) -> String {
        let cells = self.cells();
        let mut widths = COLUMNS.map(str::len);
        for (_, row) in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| -> String {
            cells
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let mut out = String::new();
        for header in &self.header {
            let _ = writeln!(out, "{header}");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", line(&COLUMNS.map(String::from)));
        let mut group = "";
        for (row_group, row) in &cells {
            if *row_group != group {
                group = row_group;
                let _ = writeln!(out, "-- {group}");
            }
            let _ = writeln!(out, "{}", line(row));
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from("# mini-kvm bench\n\n");
        for header in &self.header {
            let _ = writeln!(out, "- {header}");
        }
        let _ = writeln!(out, "\n| group | {} |", COLUMNS.join(" | "));
        let _ = writeln!(out, "|---|{}", "---|".repeat(COLUMNS.len()));
        for (group, row) in self.cells() {
            let _ = writeln!(out, "| {group} | {} |", row.join(" | "));
        }
        out
    }

    pub fn json(&self) -> String {
        let figure = |figure: &Figure| match figure {
            Ok(s) => format!(
                "{{\"median\": {}, \"min\": {}, \"max\": {}, \"runs\": {}}}",
                s.median, s.min, s.max, s.runs
            ),
            Err(why) => format!("{{\"unavailable\": {}}}", json_string(why)),
        };
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|row| {
                let baseline = match &row.baseline {
                    Some((name, value)) => format!(
                        "{{\"name\": {}, \"value\": {}}}",
                        json_string(name),
                        figure(value)
                    ),
                    None => "null".to_string(),
                };
                let ratio = row.ratio().map_or("null".to_string(), |r| r.to_string());
                format!(
                    "    {{\"group\": {}, \"name\": {}, \"unit\": {}, \"value\": {}, \"baseline\": {}, \"ratio\": {}, \"target\": {}, \"verdict\": {}}}",
                    json_string(row.group),
                    json_string(&row.name),
                    json_string(row.unit),
                    figure(&row.value),
                    baseline,
                    ratio,
                    json_string(&row.target_text()),
                    json_string(row.verdict())
                )
            })
            .collect();
        let header: Vec<String> = self.header.iter().map(|h| json_string(h)).collect();
        format!(
            "{{\n  \"host\": [{}],\n  \"rows\": [\n{}\n  ]\n}}\n",
            header.join(", "),
            rows.join(",\n")
        )
    }

    /// A horizontal bar chart of every ratio, on a log scale (ratios here span 1 to thousands).
    pub fn svg(&self) -> String {
        let bars: Vec<(String, f64)> = self
            .rows
            .iter()
            .filter_map(|row| Some((format!("{}: {}", row.group, row.name), row.ratio()?)))
            .collect();
        let (label_width, bar_width, row_height) = (430.0, 420.0, 22.0);
        let max_log = bars
            .iter()
            .map(|(_, r)| r.log10().abs())
            .fold(1.0_f64, f64::max)
            .ceil();
        let height = 60.0 + row_height * bars.len() as f64;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n",
            label_width + bar_width + 90.0
        );
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"20\" font-size=\"14\">mini-kvm bench: ratio to the baseline measured in the same run (log scale; 1x = equal; green: below 1x)</text>"
        );
        for (index, (label, ratio)) in bars.iter().enumerate() {
            let y = 40.0 + row_height * index as f64;
            // The bar is as long as the ratio is far from 1 either way; below 1 it is green
            // (faster for a time, slower for a throughput: the row's unit says which).
            let length = (ratio.log10().abs() / max_log * bar_width).max(2.0);
            let colour = if *ratio < 1.0 { "#4a9d5b" } else { "#4a76a8" };
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n<rect x=\"{}\" y=\"{}\" width=\"{length:.1}\" height=\"{}\" fill=\"{colour}\"/>\n<text x=\"{}\" y=\"{}\">{}x</text>",
                label_width - 6.0,
                y + 14.0,
                xml_escape(label),
                label_width,
                y + 3.0,
                row_height - 6.0,
                label_width + length + 4.0,
                y + 14.0,
                number(*ratio)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(median: f64) -> Figure {
        Ok(Sample {
            median,
            min: median,
            max: median,
            runs: 1,
        })
    }

    #[test]
    fn ratios_and_verdicts() {
        let row = Row::new("g", "x", "us", sample(10.5))
            .against("floor", sample(10.0))
            .target(Target::AtMost(1.05));
        assert_eq!(row.ratio(), Some(1.05));
        assert_eq!(row.verdict(), "met");
        let row = Row::new("g", "x", "ms", sample(3.0))
            .against("qemu", sample(12.0))
            .target(Target::AtMost(0.2));
        assert_eq!(row.verdict(), "missed");
        let row = Row::new("g", "x", "MiB", sample(2.0)).target(Target::ValueBelow(2.5));
        assert_eq!(row.verdict(), "met");
        let row = Row::new("g", "x", "ms", Err("not installed".into())).against("y", sample(1.0));
        assert_eq!(row.ratio(), None);
        assert_eq!(row.verdict(), "");
    }

    #[test]
    fn small_figures_keep_three_significant_digits() {
        assert_eq!(number(0.000_197_4), "0.000197");
        assert_eq!(number(0.0123), "0.012");
        assert_eq!(number(0.0), "0.000");
        assert_eq!(number(3.6041), "3.604");
        assert_eq!(number(18303.2), "18303");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }
}
