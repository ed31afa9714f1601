//! Fuzzes the whole front end: any UTF-8 text goes through `parse`,
//! `parse_expr` and `check` (which lowers every pipeline). Nothing may panic,
//! overflow the stack or hang; every diagnostic must point inside its file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pipe_lang::workspace::NoLoader;
use pipe_lang::{Context, FileId, Workspace};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = pipe_lang::parser::parse(FileId(0), text);
    let _ = pipe_lang::parser::parse_expr(FileId(0), text);
    let ws = Workspace::load(
        vec![("fuzz.pipe".to_string(), text.to_string())],
        &mut NoLoader,
    );
    for d in pipe_lang::check(&ws, &Context::offline()) {
        let len = ws.sources.get(d.span.file).text.len();
        assert!(
            d.span.start <= d.span.end && d.span.end as usize <= len,
            "{d:?}"
        );
    }
});
