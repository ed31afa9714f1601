//! Runs a frozen [`pipe_lang::plan::Plan`]; grows with the runtime issue.
