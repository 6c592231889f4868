#!/usr/bin/env bash
# Trunk's post-build hook (Trunk.toml): cuts the dashboard's wasm at its lazy
# routes (`lazy_page!` in frontend/src/main.rs), so that a browser loads the
# jobs page's code first and each other page's code when it is opened.
#
# Trunk 0.21 has no split stage, so this redoes its last step: the module
# cargo built (linked with `--emit-relocs`, see .cargo/config.toml) goes
# through `wasm-split-cli` (crates.io: wasm_split_cli_support), the main part
# through wasm-bindgen again, and both replace Trunk's output in the staging
# directory. The dispatcher serves every file but index.html as immutable,
# so every path must change when its contents do: the main module's files
# and the chunks' directory (`split-<h>/`) are named by one hash `h` of what
# makes them (Trunk's name, itself a hash of cargo's output, and the two
# tools and this script), and index.html's names and integrity hashes are
# rewritten to match.
set -euo pipefail

die() { echo "frontend/split.sh: $*" >&2; exit 1; }

staging=${TRUNK_STAGING_DIR:?run by trunk (post_build hook)}
# frontend/index.html builds with the wasm-release profile whether Trunk
# runs in release mode or not.
target_dir=${CARGO_TARGET_DIR:-target}
raw="$target_dir/wasm32-unknown-unknown/wasm-release/dispatcher-frontend.wasm"
[[ -f $raw ]] || die "cargo's output $raw is missing"

shopt -s nullglob
loaders=("$staging"/dispatcher-frontend-*.js)
[[ ${#loaders[@]} -eq 1 ]] || die "expected one dispatcher-frontend-<hash>.js in $staging, found ${#loaders[@]}"
trunk_name=$(basename "${loaders[0]}" .js)
[[ -f "$staging/${trunk_name}_bg.wasm" ]] || die "${trunk_name}_bg.wasm is missing from $staging"
for tool in wasm-split-cli wasm-bindgen; do
    command -v "$tool" >/dev/null || die "$tool is missing (./dev installs it)"
done
h=$( { echo "$trunk_name"; cat "$(command -v wasm-split-cli)" "$(command -v wasm-bindgen)" "$0"; } \
    | sha256sum | cut -c1-16)
name="dispatcher-frontend-$h"
dir="split-$h"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

wasm-split-cli "$raw" "$work/split" --target web --out-name "$name" \
    || die "wasm-split-cli failed on $raw"
# (--keep-lld-exports: the chunks' loader takes the function table from the
# main module's exports.)
wasm-bindgen --target=web --no-typescript --keep-lld-exports --out-dir="$work/bg" --out-name="$name" \
    "$work/split/$name.wasm" || die "wasm-bindgen failed on the split main module"

# Replaces every occurrence of $2 by $3 in file $1, of which there must be
# $4 ("some": at least one). Anything else means the tools' output changed
# shape: better to stop than to ship a broken app.
replace() {
    local file=$1 from=$2 to=$3 want=$4 n
    n=$(grep -oF -- "$from" "$file" | wc -l)
    if [[ $want == some && $n -lt 1 || $want != some && $n != "$want" ]]; then
        die "expected $from $want time(s) in $(basename "$file"), found it $n times"
    fi
    # (The strings are file names, quotes, slashes and base64: no `|` or `&`.)
    sed -i "s|${from//./\\.}|$to|g" "$file"
}

rm "$work/split/$name.wasm"
# The loader sits beside the chunks it fetches (by URLs relative to itself)
# and imports the main module one level up.
replace "$work/split/__wasm_split.js" "from \"./$name.js\"" "from \"../$name.js\"" 1
# (Only the imports: the import object's keys name the wasm's own imports.)
replace "$work/bg/$name.js" "from \"./__wasm_split.js\"" "from \"./$dir/__wasm_split.js\"" some

rm -rf "$staging"/split-* "$staging/$trunk_name.js" "$staging/${trunk_name}_bg.wasm"
mkdir "$staging/$dir"
mv "$work/split"/* "$staging/$dir/"
mv "$work/bg/$name.js" "$work/bg/${name}_bg.wasm" "$staging/"

# sha384 in base64, with coreutils alone.
sri() {
    local hex
    hex=$(sha384sum "$1" | cut -d' ' -f1)
    echo "sha384-$(printf "$(sed 's/../\\x&/g' <<<"$hex")" | base64 -w0)"
}
index="$staging/index.html"
# Each is named twice: imported or instantiated, and preloaded.
replace "$index" "/$trunk_name.js" "/$name.js" 2
replace "$index" "/${trunk_name}_bg.wasm" "/${name}_bg.wasm" 2
for f in "$name.js" "${name}_bg.wasm"; do
    new=$(sri "$staging/$f")
    old=$(grep -o "href=\"/$f\"[^>]*integrity=\"[^\"]*\"" "$index" | grep -o 'sha384-[^"]*' || true)
    [[ -n $old ]] || die "index.html has no integrity for $f"
    replace "$index" "$old" "$new" 1
done
echo "frontend/split.sh: $(ls "$staging/$dir" | wc -l) files in $dir; main module $(stat -c %s "$staging/${name}_bg.wasm") bytes"
