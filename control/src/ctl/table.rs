//! Column-aligned tables for people: a header row and rows of cells, each
//! column as wide as its widest cell, two spaces between columns, numbers
//! right-aligned.

use std::io::Write;

/// A table being filled.
pub struct Table {
    head: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&'static str]) -> Table {
        Table {
            head: head.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Writes the table (the header alone when there are no rows).
    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let n = self.head.len();
        let mut width: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        let mut numeric = vec![true; n];
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
                numeric[i] &= !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = (usize, &str)>| {
            let mut s = String::new();
            for (i, c) in cells {
                if i > 0 {
                    s.push_str("  ");
                }
                let pad = width[i].saturating_sub(c.chars().count());
                let last = i + 1 == n;
                if numeric[i] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    if !last {
                        s.push_str(&" ".repeat(pad));
                    }
                }
            }
            s.trim_end().to_string()
        };
        writeln!(out, "{}", line(&mut self.head.iter().copied().enumerate()))?;
        for r in &self.rows {
            writeln!(
                out,
                "{}",
                line(&mut r.iter().map(String::as_str).enumerate())
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_and_numbers_align_right() {
        let mut t = Table::new(&["NAME", "N", "NOTE"]);
        t.row(vec!["a".into(), "5".into(), "x".into()]);
        t.row(vec!["longer".into(), "123".into(), "".into()]);
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s, "NAME      N  NOTE\na         5  x\nlonger  123\n");
    }
}
