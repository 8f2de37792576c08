import { Alert, Button, PasswordInput, Stack, TextInput } from "@mantine/core";
import { useForm } from "@mantine/form";
import type { LoginBody } from "../../api/types";

interface LoginFormProps {
  onSubmit: (values: LoginBody) => void;
  submitting: boolean;
  /** The server's `detail` from the last failed attempt. */
  error: string | null;
}

export function LoginForm({ onSubmit, submitting, error }: LoginFormProps) {
  const form = useForm<LoginBody>({
    mode: "uncontrolled",
    initialValues: { username: "", password: "" },
    validate: {
      username: (value) => (value.trim() ? null : "Enter your username"),
      password: (value) => (value ? null : "Enter your password"),
    },
  });

  return (
    <form
      noValidate
      onSubmit={form.onSubmit((values) => onSubmit({ ...values, username: values.username.trim() }))}
    >
      <Stack gap="md">
        {error && (
          <Alert color="red" title="Sign-in failed" role="alert" data-testid="login-error">
            {error}
          </Alert>
        )}
        <TextInput
          label="Username"
          autoComplete="username"
          autoFocus
          withAsterisk
          key={form.key("username")}
          {...form.getInputProps("username")}
        />
        <PasswordInput
          label="Password"
          autoComplete="current-password"
          withAsterisk
          key={form.key("password")}
          {...form.getInputProps("password")}
        />
        <Button type="submit" loading={submitting} fullWidth>
          Sign in
        </Button>
      </Stack>
    </form>
  );
}
