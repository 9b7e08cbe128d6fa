-- wrk script for make bench: rotates through the Playarr route mix that
-- bench/client.py --print-mix writes ("PATH USER" a line, "-" for no user),
-- each request with its X-Playarr-User header.
--
--   wrk -s bench/mix.lua http://127.0.0.1:PORT -- MIXFILE

local reqs = {}
local i = 0

function init(args)
    local file = args[1]
    if file == nil then
        error("mix.lua: the mix file is missing (wrk ... -- MIXFILE)")
    end

    for line in io.lines(file) do
        local path, user = line:match("^(%S+)%s+(%S+)$")
        if path then
            local headers = { ["Host"] = "127.0.0.1" }
            if user ~= "-" then
                headers["X-Playarr-User"] = user
            end
            reqs[#reqs + 1] = wrk.format("GET", path, headers)
        end
    end

    if #reqs == 0 then
        error("mix.lua: no request in " .. file)
    end

    -- threads start at different places of the mix
    i = math.random(#reqs) - 1
end

function request()
    i = i + 1
    if i > #reqs then
        i = 1
    end
    return reqs[i]
end
