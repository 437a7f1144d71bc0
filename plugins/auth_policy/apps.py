from django.apps import AppConfig


class AuthPolicyConfig(AppConfig):
    name = "plugins.auth_policy"
    label = "auth_policy"
    verbose_name = "Auth token policy"
    default_auto_field = "django.db.models.BigAutoField"
