import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'data/**', 'trainer/**', 'node_modules/**', '.venv/**'] }),
  {
    rules: {
      // TypeBox's idiom: `const X = Type.Object(…)` and `type X = Static<typeof X>` share a name.
      '@typescript-eslint/no-redeclare': 'off',
      // `void reply.header(…)` marks a deliberately unawaited thenable.
      'no-void': ['error', { allowAsStatement: true }],
      // as ruff's for the Python side (ruff.toml); a line holding a long string, template, regexp or
      // URL may run over, since breaking a message or a pattern only makes it harder to grep.
      '@stylistic/max-len': ['error', {
        code: 120,
        ignoreUrls: true,
        ignoreStrings: true,
        ignoreTemplateLiterals: true,
        ignoreRegExpLiterals: true,
      }],
    },
  },
]
