"""Connection diagnostics: collect facts (the only I/O), judge them with pure rules, report."""
