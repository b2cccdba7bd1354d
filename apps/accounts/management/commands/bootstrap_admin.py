import os
import secrets

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from apps.accounts.services import admin_bootstrap
from liminal.infra import var_dir


class Command(BaseCommand):
    help = "Create or update an administrator (email/password from flags, ADMIN_EMAIL/ADMIN_PASSWORD, or generated)."

    def add_arguments(self, parser):
        parser.add_argument("--email", default=os.environ.get("ADMIN_EMAIL"))
        parser.add_argument("--password", default=os.environ.get("ADMIN_PASSWORD"))
        parser.add_argument(
            "--if-missing", action="store_true", help="Leave an existing account untouched (used by `make run`)."
        )

    def handle(self, *args, email, password, if_missing, **options):
        from apps.accounts.models import User

        email = email or "admin@liminal.local"
        saved = var_dir() / "demo-admin.txt"
        if if_missing and User.objects.filter(email__iexact=email).exists():
            hint = saved.read_text().strip() if saved.exists() else "password unchanged"
            self.stdout.write(f"Admin exists: {hint}")
            return
        generated = not password
        password = password or secrets.token_urlsafe(12)
        try:
            user, created = admin_bootstrap(email=email, password=password)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        if generated:
            saved.write_text(f"{user.email} / {password}\n")
            saved.chmod(0o600)
        verb = "Created" if created else "Updated"
        shown = password if generated else "(as given)"
        self.stdout.write(self.style.SUCCESS(f"{verb} admin {user.email} password: {shown}"))
