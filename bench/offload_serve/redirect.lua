-- The setup ferry replaces: lighttpd 1.4 + mod_magnet, the physical path
-- attracted to this script, which stats the file and, when it is missing,
-- redirects to the bucket (the classic "serve local, else 302 to S3" script).
-- run.py replaces @PUBLIC@ (public_url) and @SKIP@ (length of "/static/" + 1).
local st = lighty.stat(lighty.env["physical.path"])
if not st then
    lighty.header["Location"] = "@PUBLIC@" .. string.sub(lighty.env["uri.path"], @SKIP@)
    lighty.header["Content-Type"] = "text/plain"
    lighty.content = { "302 Found\n" }
    return 302
end
