//! The role-file parser on any text: no panic, no unbounded work, and a
//! report that is consistent (a file parses only without errors; every
//! diagnostic points inside the text).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let report = app::check(src);
    let errors = report.diagnostics.iter().filter(|d| d.is_error()).count();
    assert_eq!(report.role_file.is_some(), errors == 0, "{:#?}", report.diagnostics);
    // Lines as YAML counts them: LF, CRLF and a lone CR each end one.
    let lines = src.replace("\r\n", "\n").split(['\n', '\r']).count() as u32;
    for d in &report.diagnostics {
        assert!(d.line >= 1 && d.column >= 1, "{d:?}");
        assert!(d.line <= lines + 1, "{d:?} in {lines} lines");
        assert!(!d.message.is_empty());
    }
    if let Some(rf) = &report.role_file {
        assert!(!rf.roles().is_empty());
        assert!(rf.roles().iter().all(|r| r.peers.get() <= app::role::MAX_PEERS));
    }
});
