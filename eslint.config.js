import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'data/**', 'trainer/**', 'node_modules/**', '.venv/**'] }),
  {
    rules: {
      // TypeBox's idiom: `const X = Type.Object(…)` and `type X = Static<typeof X>` share a name.
      '@typescript-eslint/no-redeclare': 'off',
      // `void reply.header(…)` marks a deliberately unawaited thenable.
      'no-void': ['error', { allowAsStatement: true }],
    },
  },
]
