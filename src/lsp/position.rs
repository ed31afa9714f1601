//! Byte offsets to LSP positions and back. LSP counts columns in UTF-16 code
//! units; the language counts bytes.

use tower_lsp::lsp_types::{Position, Range};

pub struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    pub fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let col = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.encode_utf16().count());
        Position::new(line as u32, col as u32)
    }

    pub fn range(&self, start: usize, end: usize) -> Range {
        Range::new(self.position(start), self.position(end))
    }

    /// The byte offset of a position; past the end of a line is its end.
    pub fn offset(&self, pos: Position) -> usize {
        let Some(&start) = self.starts.get(pos.line as usize) else {
            return self.text.len();
        };
        let end = self
            .starts
            .get(pos.line as usize + 1)
            .map_or(self.text.len(), |e| e - 1);
        let mut units = 0;
        for (i, c) in self.text[start..end].char_indices() {
            if units >= pos.character as usize {
                return start + i;
            }
            units += c.len_utf16();
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_utf16_units() {
        let text = "a = \"é😀\" # x\nb\n";
        let idx = LineIndex::new(text);
        let hash = text.find('#').expect("hash");
        // `é` is one unit, `😀` two.
        assert_eq!(idx.position(hash), Position::new(0, 10));
        assert_eq!(idx.offset(Position::new(0, 10)), hash);
        assert_eq!(idx.position(text.len() - 2), Position::new(1, 0));
        assert_eq!(idx.offset(Position::new(1, 99)), text.len() - 1);
    }
}
