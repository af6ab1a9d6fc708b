"""Trust and safety: hash banks, NSFW classification, prompt rules, cases, NCMEC reports."""
