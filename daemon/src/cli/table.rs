//! The one way the admin commands print columns: a [`Table`] of headers and rows of strings,
//! each column as wide as its widest cell (counted in characters), aligned left or right,
//! columns apart by a gap of spaces (two unless set), no trailing spaces. A table without
//! headers prints `label  value` blocks (`fiona status`, the head of `fiona study`) the same
//! way.

use std::fmt::Write as _;

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    /// Numbers.
    Right,
}

/// Rows of cells under headers, rendered with computed column widths.
#[derive(Debug, Clone)]
pub struct Table {
    /// One per column; `None` for a table without a header line.
    headers: Option<Vec<String>>,
    align: Vec<Align>,
    gap: usize,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with a header line: `(header, alignment)` per column.
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            headers: Some(columns.iter().map(|(h, _)| h.to_string()).collect()),
            align: columns.iter().map(|&(_, a)| a).collect(),
            gap: 2,
            rows: Vec::new(),
        }
    }

    /// A table without a header line.
    pub fn headless(align: &[Align]) -> Table {
        Table {
            headers: None,
            align: align.to_vec(),
            gap: 2,
            rows: Vec::new(),
        }
    }

    /// Spaces between columns.
    pub fn gap(mut self, spaces: usize) -> Table {
        self.gap = spaces;
        self
    }

    /// Add a row; missing cells are empty, cells past the last column are left out.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        cells.resize(self.align.len(), String::new());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row (after the header line), each ending in `\n`.
    pub fn render(&self) -> String {
        let lines: Vec<&Vec<String>> = self.headers.iter().chain(&self.rows).collect();
        let width: Vec<usize> = (0..self.align.len())
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for l in lines {
            let mut line = String::new();
            for (c, cell) in l.iter().enumerate() {
                if c > 0 {
                    line.push_str(&" ".repeat(self.gap));
                }
                let w = width[c];
                // Writing to a String cannot fail.
                let _ = match self.align[c] {
                    Align::Left => write!(line, "{cell:<w$}"),
                    Align::Right => write!(line, "{cell:>w$}"),
                };
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Print the table on standard output.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut t = Table::new(&[
            ("KEY", Align::Left),
            ("BYTES", Align::Right),
            ("NOTE", Align::Left),
        ]);
        t.row(["a", "1", "first"]);
        t.row(["longer-key", "123456", ""]);
        // KEY is 10 wide, BYTES 6 (right-aligned), NOTE last: no trailing spaces.
        assert_eq!(
            t.render(),
            "KEY          BYTES  NOTE\n\
             a                1  first\n\
             longer-key  123456\n"
        );
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut t = Table::new(&[("NAME", Align::Left), ("N", Align::Right)]);
        t.row(["Müller", "1"]);
        t.row(["Ng", "22"]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "Müller   1");
        assert_eq!(lines[2], "Ng      22");
        assert!(lines.iter().all(|l| l.chars().count() == 10), "{text}");
    }

    #[test]
    fn headless_table_with_a_gap_of_one() {
        let mut t = Table::headless(&[Align::Left, Align::Left]).gap(1);
        t.row(["index", "ok"]);
        t.row(["associations", "1 active"]);
        t.row(["", "(more)"]);
        assert_eq!(
            t.render(),
            "index        ok\nassociations 1 active\n             (more)\n"
        );
    }

    #[test]
    fn short_and_long_rows_fit_the_columns() {
        let mut t = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        t.row(["x"]);
        t.row(["y", "z", "dropped"]);
        assert_eq!(t.render(), "A  B\nx\ny  z\n");
        assert!(!t.is_empty());
        assert!(Table::new(&[("A", Align::Left)]).render() == "A\n");
    }
}
