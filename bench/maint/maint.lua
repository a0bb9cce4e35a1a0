-- The setup ferry replaces: lighttpd 1.4 + mod_magnet, every raw URL attracted
-- to this script, which answers 503 with the maintenance page (2008-era API:
-- lighty.header / lighty.content, still supported by 1.4.69). run.py replaces
-- @PAGE@ with the page's absolute path.
lighty.header["X-Maintenance-Mode"] = "1"
lighty.header["Retry-After"] = "300"
lighty.header["Cache-Control"] = "no-store"
lighty.header["Content-Type"] = "text/html; charset=utf-8"
lighty.content = { { filename = "@PAGE@" } }
return 503
