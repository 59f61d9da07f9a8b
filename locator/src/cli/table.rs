//! Aligned plain-text tables for the admin CLI: each column as wide as its widest cell, text
//! left-aligned, numbers right-aligned, two spaces between columns, no trailing spaces.
//!
//! Widths count characters, which is right for the ASCII the admin API answers (ids, region
//! names, codes); wide or combining characters would only misalign, never panic.

use std::fmt::Write;

/// Spaces between two columns.
const GAP: usize = 2;

/// How a column's cells (and its header) are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table being filled row by row, then rendered once.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Adds a row; missing cells are blank and cells beyond the columns are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The header line and one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (header, _))| {
                self.rows.iter().filter_map(|r| r.get(i)).map(|c| width(c)).fold(width(header), usize::max)
            })
            .collect();
        let mut out = String::new();
        let headers: Vec<&str> = self.columns.iter().map(|(h, _)| *h).collect();
        self.line(&mut out, &widths, &headers);
        for row in &self.rows {
            let cells: Vec<&str> =
                (0..self.columns.len()).map(|i| row.get(i).map(String::as_str).unwrap_or("")).collect();
            self.line(&mut out, &widths, &cells);
        }
        out
    }

    fn line(&self, out: &mut String, widths: &[usize], cells: &[&str]) {
        let mut line = String::new();
        for (i, ((cell, width), (_, align))) in cells.iter().zip(widths).zip(&self.columns).enumerate() {
            if i > 0 {
                line.push_str(&" ".repeat(GAP));
            }
            // Writing to a String cannot fail.
            let _ = match align {
                Align::Left => write!(line, "{cell:<width$}"),
                Align::Right => write!(line, "{cell:>width$}"),
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell_and_numbers_align_right() {
        let mut t = Table::new(&[("ID", Align::Left), ("SESSIONS", Align::Right), ("REGION", Align::Left)]);
        t.row(vec!["edge-1".into(), "2".into(), "eu".into()]);
        t.row(vec!["e2".into(), "12345678901".into(), "us-east".into()]);
        assert_eq!(
            t.render(),
            "ID         SESSIONS  REGION\n\
             edge-1            2  eu\n\
             e2      12345678901  us-east\n"
        );
    }

    #[test]
    fn short_rows_are_padded_and_lines_have_no_trailing_spaces() {
        let mut t = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        t.row(vec!["long cell".into()]);
        t.row(vec!["x".into(), "y".into(), "ignored".into()]);
        let text = t.render();
        assert_eq!(text, "A          B\nlong cell\nx          y\n");
        assert!(text.lines().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn an_empty_table_is_its_header() {
        let t = Table::new(&[("EDGE", Align::Left), ("SCORE", Align::Right)]);
        assert!(t.is_empty());
        assert_eq!(t.render(), "EDGE  SCORE\n");
    }
}
