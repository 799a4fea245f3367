#!/usr/bin/env node
// Entry for `npx opentune …` / the installed bin: runs the compiled CLI.
import '../dist/cli.js'
