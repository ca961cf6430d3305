"""The method's vocabulary, shared by every stage: page references and message parts, the control
and think tokens, the not-answerable answer, seeded choices, errors in what a person gave docthink.
Modules here import nothing from the rest of docthink."""
